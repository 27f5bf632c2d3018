//! The architecture's rules, checked on the module tree as it is (every file under `src/` is read
//! and placed by its module path, so a new file is checked without anyone adding it to a list):
//!
//! 1. **Layers.** Every top-level module sits in one layer of [`LAYERS`]; a module imports only
//!    from its own layer or below. A new top-level module fails the test until it is placed.
//! 2. **Pure cores.** The modules under a [`PURE`] path (their submodules too) do no I/O and do
//!    not read the clock: they are fed bytes, events and time and return actions. Nothing they
//!    import does I/O either (judged by reading the imported module, not by a list), except the
//!    foundation (`time` hands them the clock's values) and their own folder's shared types.
//! 3. **No two modules import each other** (a pair that does is one concern split in two, or a
//!    shared piece that belongs below both). A module and its own parent do not count: a parent
//!    re-exports what its children define. Nor do two top-level modules (folders), directly or
//!    round a longer cycle: a folder is a concern, and two that lean on each other are one.
//! 4. **Settings, not configuration.** Below the daemon and the CLI, nothing imports
//!    `crate::config` or `crate::daemon`, and only `daemon::export` feeds `metrics`.
//! 5. **One relay walk.** Above the codec nothing reads RELAY_MSG itself; relay chains are read
//!    through `wire::relay`.
//! 6. **One source of time types.** Only `time` names `std::time` or `tokio::time::Instant`;
//!    every other file takes `Duration`, `Instant`, `SystemTime` and `TokioInstant` from
//!    `crate::time`, so which clock a module reads is decided in one place.
//!
//! Test code (`tests` modules, and what follows a file's first `#[cfg(test)]`) is not checked,
//! except by rule 6, which reads every file under `src/` whole (the binary's and tests too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    // Foundation: values and codecs every layer speaks.
    &["prefix", "label", "time", "wire", "bpf"],
    // The binding model and its rules, persistence, and the process's own plumbing.
    &[
        "cache",
        "admission",
        "persist",
        "notify",
        "logging",
        "supervise",
    ],
    // The shells that talk to the outside: kernel, servers, packets, operator, scrapers.
    &[
        "cache_task",
        "kernel",
        "requestor",
        "bulk",
        "snoop",
        "trigger",
        "pcap",
        "control",
        "metrics",
    ],
    // Composition: what the operator wants, and what connects it all.
    &["config", "daemon", "cli"],
];

/// Module paths whose subtrees are sans-IO cores; `*` matches any one module name.
const PURE: &[&str] = &[
    "wire",
    "bpf",
    "prefix",
    "label",
    "*::core",
    "cache::merge",
    "cache::binding",
    "kernel::plan",
    "kernel::book",
    "kernel::mapper",
    "persist::codec",
    "trigger::known",
    "trigger::nflog",
    "trigger::nfnl",
    "trigger::nfset",
    "trigger::ruleset",
];

/// What a pure core must not name.
const IO: &[&str] = &[
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

/// One source file: its module path and its non-test code, comments cut off.
struct Module {
    path: Vec<String>,
    file: String,
    code: Vec<(usize, String)>,
}

impl Module {
    fn name(&self) -> String {
        self.path.join("::")
    }

    fn top(&self) -> &str {
        self.path.first().map_or("", String::as_str)
    }
}

/// Every `.rs` file under `src/`, with `src/` itself (both rules walk the same tree).
fn source_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    (src, files)
}

fn modules() -> Vec<Module> {
    let (src, files) = source_files();
    let mut out = Vec::new();
    for p in files {
        let rel = p.strip_prefix(&src).unwrap().with_extension("");
        let mut path: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|l| l == "mod") {
            path.pop();
        }
        if matches!(path.as_slice(), [f] if f == "lib" || f == "main")
            || path.iter().any(|c| c == "tests" || c.ends_with("_tests"))
        {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = text
            .lines()
            .enumerate()
            .take_while(|(_, l)| !l.trim_start().starts_with("#[cfg(test)]"))
            .map(|(n, l)| (n + 1, l.split("//").next().unwrap_or("").to_string()))
            .collect();
        out.push(Module {
            path,
            file: format!("src/{}", p.strip_prefix(&src).unwrap().display()),
            code,
        });
    }
    assert!(out.len() > 50, "src/ not found or nearly empty");
    out
}

/// Every path the code names after `crate::` or `super::` (brace groups expanded), as segments
/// from the crate root.
fn named_paths(m: &Module) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    // A `use` may span lines: read the code as one string, remembering where each line starts.
    let mut text = String::new();
    let mut starts = Vec::new();
    for (no, line) in &m.code {
        starts.push((text.len(), *no));
        text.push_str(line);
        text.push('\n');
    }
    let line_of = |at: usize| {
        starts
            .iter()
            .rev()
            .find(|(s, _)| *s <= at)
            .map_or(0, |(_, n)| *n)
    };
    // `super` of a file module is its parent; of a folder's mod.rs, the folder's parent.
    let is_folder = m.file.ends_with("/mod.rs");
    let parent: Vec<String> = if is_folder || m.path.len() > 1 {
        m.path[..m.path.len() - 1].to_vec()
    } else {
        Vec::new()
    };
    let bytes = text.as_bytes();
    for (root, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(i) = text[from..].find(root) {
            let at = from + i;
            from = at + root.len();
            let before = at.checked_sub(1).map(|b| bytes[b] as char);
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut base = base.clone();
            while text[from..].starts_with("super::") {
                from += "super::".len();
                base.pop();
            }
            expand(&text[from..], base, &mut |p| {
                out.push((line_of(at), p));
            });
        }
    }
    out
}

/// Reads `a::b::{c, d::e}`-style paths at the start of `s`, each prefixed with `prefix`.
fn expand(s: &str, prefix: Vec<String>, out: &mut dyn FnMut(Vec<String>)) {
    let mut path = prefix;
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            path.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        if let Some(r) = rest.strip_prefix("::") {
            rest = r;
            if let Some(r) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut item_start = 0;
                for (i, c) in r.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' | ',' if depth == 1 => {
                            let item = r[item_start..i].trim();
                            if !item.is_empty() && item != "self" {
                                expand(item, path.clone(), out);
                            }
                            item_start = i + 1;
                            if c == '}' {
                                break;
                            }
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if path.iter().all(|p| p != "self") {
                    out(path);
                }
                return;
            }
            continue;
        }
        break;
    }
    out(path);
}

/// The longest known module path that `named` starts with.
fn resolve<'a>(named: &[String], known: &'a BTreeSet<Vec<String>>) -> Option<&'a Vec<String>> {
    (1..=named.len())
        .rev()
        .find_map(|n| known.get(&named[..n].to_vec()))
}

fn matches_pure(path: &[String]) -> bool {
    PURE.iter().any(|p| {
        let pat: Vec<&str> = p.split("::").collect();
        path.len() >= pat.len() && pat.iter().zip(path).all(|(a, b)| *a == "*" || a == b)
    })
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// (module, line, imported module) for every import of another module.
fn edges(mods: &[Module]) -> Vec<(String, usize, Vec<String>)> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut out = Vec::new();
    for m in mods {
        for (line, named) in named_paths(m) {
            if let Some(target) = resolve(&named, &known)
                && *target != m.path
            {
                out.push((m.name(), line, target.clone()));
            }
        }
    }
    out
}

#[test]
fn every_top_level_module_has_a_layer_and_imports_run_down() {
    let mods = modules();
    let by_name: BTreeMap<String, &Module> = mods.iter().map(|m| (m.name(), m)).collect();
    let mut bad = Vec::new();
    let tops: BTreeSet<&str> = mods.iter().map(Module::top).collect();
    for t in &tops {
        if layer_of(t).is_none() {
            bad.push(format!(
                "top-level module `{t}` has no layer: place it in LAYERS"
            ));
        }
    }
    for (from, line, to) in edges(&mods) {
        let src = by_name[&from];
        let (Some(a), Some(b)) = (layer_of(src.top()), layer_of(&to[0])) else {
            continue;
        };
        if b > a {
            bad.push(format!(
                "{}:{line}: `{from}` (layer {a}) imports `{}` (layer {b})",
                src.file,
                to.join("::")
            ));
        }
    }
    assert!(bad.is_empty(), "layering:\n{}", bad.join("\n"));
}

#[test]
fn pure_cores_do_no_io_and_import_only_pure_code() {
    let mods = modules();
    let pure: Vec<&Module> = mods.iter().filter(|m| matches_pure(&m.path)).collect();
    for must in [
        "wire",
        "requestor::core",
        "bulk::core",
        "kernel::book",
        "cache::merge",
    ] {
        assert!(
            pure.iter().any(|m| m.name() == must),
            "`{must}` must be among the checked pure modules"
        );
    }
    let mut bad = Vec::new();
    for m in &pure {
        for (no, code) in &m.code {
            for word in IO {
                if code.contains(word) {
                    bad.push(format!("{}:{no}: uses `{word}`", m.file));
                }
            }
        }
    }
    let pure_names: BTreeSet<String> = pure.iter().map(|m| m.name()).collect();
    let io: BTreeSet<String> = mods
        .iter()
        .filter(|m| m.code.iter().any(|(_, c)| IO.iter().any(|w| c.contains(w))))
        .map(Module::name)
        .collect();
    let mut imports = BTreeSet::new();
    for (from, line, to) in edges(&mods) {
        // The foundation (the clock's values and the backoff, not its reading) and the core's own
        // parent (the types its folder's mod.rs defines) are what a core is written against.
        let foundation = LAYERS[0].contains(&to[0].as_str());
        let to = to.join("::");
        let parent = from.starts_with(&format!("{to}::"));
        if pure_names.contains(&from) && io.contains(&to) && !foundation && !parent {
            imports.insert(format!(
                "{from}:{line}: a pure core imports `{to}`, which does I/O"
            ));
        }
    }
    bad.extend(imports);
    assert!(
        bad.is_empty(),
        "pure cores must stay sans-IO:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let mods = modules();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (from, line, to) in edges(&mods) {
        seen.entry((from, to.join("::"))).or_insert(line);
    }
    let mut pairs = Vec::new();
    for (a, b) in seen.keys() {
        let related = a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
        if a < b && !related && seen.contains_key(&(b.clone(), a.clone())) {
            pairs.push(format!("{a} <-> {b}"));
        }
    }
    assert!(
        pairs.is_empty(),
        "modules that import each other: {pairs:#?}"
    );
}

#[test]
fn lower_modules_import_neither_config_nor_daemon_nor_metrics() {
    let mods = modules();
    let mut bad = Vec::new();
    for m in &mods {
        if matches!(m.top(), "daemon" | "cli" | "config") {
            continue;
        }
        let mut words = vec!["crate::config", "crate::daemon"];
        if m.top() != "metrics" {
            words.push("crate::metrics");
        }
        for (no, code) in &m.code {
            for w in &words {
                if code.contains(w) {
                    bad.push(format!("{}:{no}: uses `{w}`", m.file));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "lower modules take their settings, not the configuration, and do not reach up:\n{}",
        bad.join("\n")
    );
}

/// The checks can fail: a planted import cycle and a planted clock read are found.
#[test]
fn the_checks_see_planted_violations() {
    let m = |path: &str, code: &str| Module {
        path: path.split("::").map(String::from).collect(),
        file: format!("src/{}.rs", path.replace("::", "/")),
        code: vec![(1, code.to_string())],
    };
    let mods = vec![
        m("alpha::one", "use crate::beta::{two::Thing, self};"),
        m("beta::two", "use super::super::alpha::one::X;"),
        m("alpha", ""),
        m("beta", ""),
    ];
    let e = edges(&mods);
    assert!(
        e.iter()
            .any(|(f, _, t)| f == "alpha::one" && t.join("::") == "beta::two"),
        "{:?}",
        e.iter()
            .map(|(f, _, t)| (f, t.join("::")))
            .collect::<Vec<_>>()
    );
    let named = named_paths(&m("kernel::book", "let t = crate::time::backoff(1, a, b);"));
    assert_eq!(named[0].1, ["time", "backoff"]);
    assert!(matches_pure(&["requestor".into(), "core".into()]));
    assert!(!matches_pure(&["requestor".into(), "udp".into()]));
}

/// The top-level modules on a cycle of imports between folders (`a` imports from `b`, which
/// imports from `a`, possibly through others), each cycle as its members in order.
fn folder_cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let next = |n: &String| -> Vec<&String> {
        edges
            .iter()
            .filter(|(a, _)| a == n)
            .map(|(_, b)| b)
            .collect()
    };
    // For each node, search for a path back to it; report each cycle once (by its smallest member).
    let mut out = Vec::new();
    for start in &nodes {
        let mut stack: Vec<(&String, Vec<&String>)> = vec![(*start, vec![*start])];
        let mut seen = BTreeSet::new();
        while let Some((n, path)) = stack.pop() {
            for m in next(n) {
                if m == *start {
                    if path.iter().all(|p| *p >= *start) {
                        out.push(path.iter().map(|s| (*s).clone()).collect());
                    }
                } else if seen.insert(m) {
                    let mut p = path.clone();
                    p.push(m);
                    stack.push((m, p));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn folder_edges(mods: &[Module]) -> BTreeSet<(String, String)> {
    let by_name: BTreeMap<String, &Module> = mods.iter().map(|m| (m.name(), m)).collect();
    edges(mods)
        .into_iter()
        .map(|(from, _, to)| (by_name[&from].top().to_string(), to[0].clone()))
        .filter(|(a, b)| a != b)
        .collect()
}

#[test]
fn no_two_folders_import_each_other() {
    let cycles = folder_cycles(&folder_edges(&modules()));
    assert!(
        cycles.is_empty(),
        "top-level modules on an import cycle: {cycles:#?}"
    );
}

/// The check above can fail: a planted cycle (three folders round, and a plain pair) is found.
#[test]
fn a_planted_folder_cycle_is_found() {
    let e = |a: &str, b: &str| (a.to_string(), b.to_string());
    let edges: BTreeSet<_> = [
        e("cache", "persist"),
        e("persist", "wire"),
        e("kernel", "cache"),
        e("snoop", "kernel"),
        e("cache", "snoop"),
        e("bulk", "requestor"),
        e("requestor", "bulk"),
    ]
    .into();
    let cycles = folder_cycles(&edges);
    assert_eq!(
        cycles,
        vec![
            vec!["bulk".to_string(), "requestor".to_string()],
            vec![
                "cache".to_string(),
                "snoop".to_string(),
                "kernel".to_string()
            ],
        ]
    );
}

/// What reads a relay level's RELAY_MSG: a walk down a relay chain.
const RELAY_WALK: &[&str] = &[".relay_msg(", ".relay_message(", "RelayMsg("];

/// The lines of `m` that walk a relay chain themselves, unless `m` is the codec (`wire`), whose
/// `wire::relay` is the one relay-chain API every other module asks.
fn own_relay_walks(m: &Module) -> Vec<String> {
    if m.top() == "wire" {
        return Vec::new();
    }
    m.code
        .iter()
        .filter(|(_, l)| RELAY_WALK.iter().any(|w| l.contains(w)))
        .map(|(n, l)| format!("{}:{n}: {}", m.file, l.trim()))
        .collect()
}

/// Rule 5, one relay walk: above the codec nothing reads RELAY_MSG itself. This box's level,
/// the one below it and the client message come from `wire::relay` (`RelayChain`), so whose
/// level names the link is decided in one place.
#[test]
fn relay_chains_are_walked_only_by_wire_relay() {
    let bad: Vec<String> = modules().iter().flat_map(own_relay_walks).collect();
    assert!(
        bad.is_empty(),
        "relay levels read outside wire::relay:\n{}",
        bad.join("\n")
    );
    // The check can fail: a planted walk in the snooper is found, the codec's own is not.
    let m = |path: &str, code: &str| Module {
        path: path.split("::").map(String::from).collect(),
        file: format!("src/{}.rs", path.replace("::", "/")),
        code: vec![(7, code.to_string())],
    };
    let planted = "let inner = r.options.relay_msg()?;";
    assert_eq!(
        own_relay_walks(&m("snoop::classify", planted)),
        ["src/snoop/classify.rs:7: let inner = r.options.relay_msg()?;"]
    );
    assert!(own_relay_walks(&m("wire::relay", planted)).is_empty());
}

/// What only `src/time.rs` may name: the standard library's time types and tokio's instant
/// (tokio's timers, `tokio::time::sleep` and the like, are a runtime API, not a time type).
const FOREIGN_TIME: &[&str] = &["std::time", "tokio::time::Instant"];

/// The lines of one source file (`file` relative to the crate root, `text` its whole content)
/// that name a time type from elsewhere than `crate::time`; none for `src/time.rs` itself.
fn foreign_time_types(file: &str, text: &str) -> Vec<String> {
    if file == "src/time.rs" {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        .filter_map(|(n, l)| {
            let code = l.split("//").next().unwrap_or("");
            let braced = code.contains("tokio::time::{") && code.contains("Instant");
            (braced || FOREIGN_TIME.iter().any(|w| code.contains(w)))
                .then(|| format!("{file}:{}: {}", n + 1, l.trim()))
        })
        .collect()
}

/// Rule 6: time types come only from `crate::time` (`lqagent::time` in the binary), in every
/// file under `src/`, test code included.
#[test]
fn time_types_come_only_from_crate_time() {
    let (src, paths) = source_files();
    let mut bad = Vec::new();
    let files = paths.len();
    for p in paths {
        let file = format!("src/{}", p.strip_prefix(&src).unwrap().display());
        bad.extend(foreign_time_types(
            &file,
            &std::fs::read_to_string(&p).unwrap(),
        ));
    }
    assert!(files > 50, "src/ not found or nearly empty");
    assert!(
        bad.is_empty(),
        "time types named outside src/time.rs (take them from crate::time):\n{}",
        bad.join("\n")
    );
    // The check can fail: planted imports are found, a comment and time.rs itself are not.
    let planted = "use std::io;\nuse std::time::Duration;\n// std::time in a comment\n";
    assert_eq!(
        foreign_time_types("src/kernel/book.rs", planted),
        ["src/kernel/book.rs:2: use std::time::Duration;"]
    );
    assert_eq!(
        foreign_time_types("src/bulk/tcp.rs", "use tokio::time::{sleep, Instant};").len(),
        1
    );
    assert!(foreign_time_types("src/time.rs", planted).is_empty());
}
