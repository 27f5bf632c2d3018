//! The Debian package as an operator gets it: `lqagent generate` writes the man pages and
//! completions from the CLI definition, `cargo deb --no-build` packs the binary this test run
//! built, and the .deb is read back with `dpkg-deb`: its files, conffile, unit (user and
//! capabilities), the postinst that creates the user, and the generated man pages.
//!
//! Needs `cargo-deb` (tests/run.sh installs it; under CI=true a missing one fails) and dpkg.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn have_cargo_deb() -> bool {
    let ok = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "cargo-deb missing under CI=true: tests/run.sh installs it"
        );
        eprintln!("SKIP deb_package: cargo install cargo-deb --locked");
    }
    ok
}

/// The .deb of this test run, built once (in `target/deb-test`) for every test that needs it:
/// cargo-deb strips and compresses the 150 MB debug binary, a minute of CPU on a CI machine.
pub(crate) fn the_deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let dir = Path::new(ROOT).join("target/deb-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        build_deb(&dir)
    })
}

/// Build the .deb from the binary of this test run; its path.
fn build_deb(out_dir: &Path) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_lqagent"));
    // The assets the manifest names: generated pages and completions, the binary where
    // `target/release/lqagent` is looked for under `--profile dev` (target/debug).
    run(Command::new(bin)
        .arg("generate")
        .arg(Path::new(ROOT).join("target/assets")));
    run(Command::new(env!("CARGO"))
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-Z",
            "gz",
            "--output",
        ])
        .arg(out_dir)
        .current_dir(ROOT));
    std::fs::read_dir(out_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb written")
}

#[test]
fn the_deb_has_binary_unit_conffile_user_man_pages_and_completions() {
    if !have_cargo_deb() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = the_deb();

    let files = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    for want in [
        "./usr/sbin/lqagent",
        "./etc/lqagent/lqagent.toml",
        "lib/systemd/system/lqagent.service",
        "./usr/share/man/man8/lqagent.8.gz",
        "./usr/share/man/man8/lqagent-show.8.gz",
        "./usr/share/bash-completion/completions/lqagent",
        "./usr/share/zsh/vendor-completions/_lqagent",
        "./usr/share/fish/vendor_completions.d/lqagent.fish",
        "./usr/share/doc/lqagent/examples/prometheus-alerts.yml",
    ] {
        assert!(files.contains(want), "{want} missing:\n{files}");
    }
    assert!(
        !files.contains("lqagent-generate"),
        "the hidden subcommand has no page"
    );

    let info = run(Command::new("dpkg-deb").arg("-I").arg(deb));
    assert!(info.contains("Package: lqagent"), "{info}");
    assert!(info.contains("adduser"), "depends on adduser: {info}");

    let x = dir.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    let ctl = dir.path().join("ctl");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctl));

    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/lqagent/lqagent.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains(" lqagent"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper"),
        "the unit is enabled by the systemd snippet: {postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "snippets substituted");

    let unit_path = [
        "lib/systemd/system/lqagent.service",
        "usr/lib/systemd/system/lqagent.service",
    ]
    .iter()
    .map(|p| x.join(p))
    .find(|p| p.exists())
    .expect("unit in the package");
    let unit = std::fs::read_to_string(unit_path).unwrap();
    assert!(unit.lines().any(|l| l == "User=lqagent"), "{unit}");
    let ambient = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities=");
    let caps: Vec<&str> = ambient.split_whitespace().collect();
    assert!(
        caps.contains(&"CAP_NET_ADMIN") && caps.contains(&"CAP_NET_RAW"),
        "{caps:?}"
    );
    assert!(
        caps.iter()
            .all(|c| ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"].contains(c)),
        "nothing beyond the network capabilities: {caps:?}"
    );

    // The packaged sample config is the repository's and checks; the binary runs.
    let sample = std::fs::read_to_string(x.join("etc/lqagent/lqagent.toml")).unwrap();
    assert_eq!(
        sample,
        std::fs::read_to_string(Path::new(ROOT).join("deploy/lqagent.toml")).unwrap()
    );
    let version = run(Command::new(x.join("usr/sbin/lqagent")).arg("version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // The man page (gzipped by cargo-deb) is roff naming the subcommands.
    let page = run(Command::new("zcat").arg(x.join("usr/share/man/man8/lqagent.8.gz")));
    assert!(
        page.contains(".TH LQAGENT 8"),
        "{}",
        &page[..page.len().min(300)]
    );
    assert!(
        page.contains(r"lqagent\-check\-config(8)") && page.contains(r"lqagent\-show(8)"),
        "{page}"
    );
    let bash =
        std::fs::read_to_string(x.join("usr/share/bash-completion/completions/lqagent")).unwrap();
    assert!(
        bash.contains("complete") && bash.contains("check-config"),
        "bash completion"
    );
}
