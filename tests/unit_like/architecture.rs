//! Enforces the layer boundary: the pure protocol code — `wire/`, every
//! `core.rs`, `cache/merge.rs`, `kernel/plan.rs`, `persist/codec.rs` and the trigger's pure parts
//! (`trigger/{known,nflog,ruleset}.rs`) — must not touch I/O, the clock or config.
//! A violation here means a sans-IO core grew a side effect.

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "tokio",
    "rtnetlink",
    "netlink_",
    "socket2",
    "crate::config",
    "Instant::now",
    "SystemTime::now",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::fs",
];

fn pure_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(root.join("src"))
                .unwrap()
                .to_string_lossy()
                .to_string();
            let pure = rel.starts_with("wire/")
                || rel.ends_with("/core.rs")
                || rel == "cache/merge.rs"
                || rel == "kernel/plan.rs"
                || rel == "persist/codec.rs"
                || rel == "trigger/known.rs"
                || rel == "trigger/nflog.rs"
                || rel == "trigger/ruleset.rs";
            if pure && rel.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn pure_modules_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = pure_files(root);
    assert!(
        files.iter().any(|p| p.ends_with("wire/mod.rs")),
        "wire/mod.rs must be among the checked files: {files:?}"
    );
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (no, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    bad.push(format!("{}:{}: uses `{word}`", f.display(), no + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "pure modules must stay sans-IO:\n{}",
        bad.join("\n")
    );
}
