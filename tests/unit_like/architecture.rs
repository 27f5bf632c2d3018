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

/// No two files of one module folder import each other (`wire/`, `bulk/`): a pair that does is
/// one concern split in two, or a shared piece that belongs below both. A sibling counts as
/// imported when a file names `super::NAME` or `crate::FOLDER::NAME` for a sibling `NAME.rs`.
#[test]
fn sibling_files_do_not_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pairs = Vec::new();
    for folder in ["wire", "bulk"] {
        let dir = root.join("src").join(folder);
        let mut siblings = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "rs") {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                siblings.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
        assert!(siblings.len() > 2, "no files found in src/{folder}");
        let imports = |text: &str, name: &str| {
            [format!("super::{name}"), format!("crate::{folder}::{name}")]
                .iter()
                .any(|path| {
                    text.match_indices(path.as_str()).any(|(i, _)| {
                        let next = text[i + path.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                })
        };
        for (a, text_a) in &siblings {
            for (b, text_b) in &siblings {
                if a < b && imports(text_a, b) && imports(text_b, a) {
                    pairs.push(format!("src/{folder}: {a}.rs <-> {b}.rs"));
                }
            }
        }
    }
    assert!(pairs.is_empty(), "files that import each other: {pairs:#?}");
}

/// Every `.rs` file under `src/`, relative to it.
fn all_sources(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p
                    .strip_prefix(root.join("src"))
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.push((rel, p));
            }
        }
    }
    out
}

/// Lines of `file` (comments cut off) that name one of `words`.
fn uses(file: &Path, words: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut bad = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for word in words {
            if code.contains(word) {
                bad.push(format!("{}:{}: uses `{word}`", file.display(), no + 1));
            }
        }
    }
    bad
}

/// The configuration reaches the modules only through `daemon::settings`: below the daemon and
/// the CLI, no module imports `crate::config`; and none imports upward into `daemon` or
/// registers itself with `metrics` (the daemon's `export` does that from the modules' stats).
#[test]
fn lower_modules_import_neither_config_nor_daemon_nor_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = all_sources(root);
    assert!(
        files.iter().any(|(r, _)| r == "admission.rs"),
        "admission.rs must be among the checked files"
    );
    let mut bad = Vec::new();
    for (rel, path) in &files {
        let top = rel.split('/').next().unwrap_or("");
        let upper = matches!(
            top,
            "daemon" | "cli" | "main.rs" | "lib.rs" | "config" | "config.rs"
        );
        if upper {
            continue;
        }
        let own_metrics = top == "metrics" || top == "metrics.rs";
        let mut words = vec!["crate::config", "crate::daemon"];
        if !own_metrics {
            words.push("crate::metrics");
        }
        bad.extend(uses(path, &words));
    }
    assert!(
        bad.is_empty(),
        "lower modules must take their settings, not the configuration, and not reach up:\n{}",
        bad.join("\n")
    );
}
