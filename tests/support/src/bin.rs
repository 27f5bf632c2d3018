//! Where the programs under test are. A test binary runs from `target/<profile>/deps/`; cargo
//! puts the agent's binary in `target/<profile>/` and the `lqrefserver` example in
//! `target/<profile>/examples/`. (`CARGO_BIN_EXE_*` is only set for the agent's own tests, not
//! for this crate, so the paths are found from the running test instead.)

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/`, from the running test or bench binary.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary in a directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("target/<profile>")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// The `lqagent` binary cargo built for these tests (`target/<profile>/lqagent`).
pub fn lqagent() -> PathBuf {
    let bin = profile_dir().join("lqagent");
    assert!(
        bin.is_file(),
        "{} missing: cargo builds it for the agent's tests and benches",
        bin.display()
    );
    bin
}

/// The `lqrefserver` example (`target/<profile>/examples/lqrefserver`). `cargo test` builds
/// the examples; `cargo test --test loopback` alone does not, so a missing one is built here
/// with the cargo that builds these tests.
pub fn lqrefserver() -> PathBuf {
    let dir = profile_dir();
    let bin = dir.join("examples").join("lqrefserver");
    if !bin.is_file() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(root)
            .args(["build", "--example", "lqrefserver"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build --example lqrefserver");
        assert!(st.success(), "cargo build --example lqrefserver: {st}");
    }
    assert!(bin.is_file(), "{} missing after building it", bin.display());
    bin
}
