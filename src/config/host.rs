//! Checks of a configuration against the host it runs on, beside the pure validation: another
//! routing daemon's protocol number (from iproute2's `rt_protos` files) and a state directory
//! the agent could not write. They read the filesystem, so they run in `check-config` and at
//! daemon start, never in [`Config::parse`](super::Config::parse) (which tests and tools call
//! anywhere).
//!
//! Why the protocol number matters: reconcile deletes every route of `routes.protocol` that the
//! cache does not want. Sharing the number with BIRD, FRR or keepalived would have lqagent delete
//! their routes.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Route protocol numbers other software uses: Linux's `include/uapi/linux/rtnetlink.h`
/// (RTPROT_*), the same in iproute2's `rt_protos`, and FRR's zebra (186–198, its own
/// `rt_protos.d/frr.conf`).
pub(crate) const WELL_KNOWN_PROTOCOLS: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (99, "openr"),
    (186, "bgp (FRR)"),
    (187, "isis (FRR)"),
    (188, "ospf (FRR)"),
    (189, "rip (FRR)"),
    (190, "ripng (FRR)"),
    (191, "nhrp (FRR)"),
    (192, "eigrp (FRR)"),
    (193, "ldp (FRR)"),
    (194, "sharp (FRR)"),
    (195, "pbr (FRR)"),
    (196, "static (FRR)"),
    (197, "openfabric (FRR)"),
    (198, "srte (FRR)"),
];

/// The name a protocol number is registered under here, if any.
pub(crate) fn well_known_protocol(n: u8) -> Option<&'static str> {
    WELL_KNOWN_PROTOCOLS
        .iter()
        .find(|(p, _)| *p == n)
        .map(|(_, name)| *name)
}

/// Names an `rt_protos`-format text gives `n` (`NUMBER NAME` lines, `#` comments), except
/// `lqagent` itself (docs/routes.md suggests adding `211 lqagent`).
pub(crate) fn protos_file_names(text: &str, n: u8) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let num = it.next()?;
            let name = it.next()?;
            let v = if let Some(hex) = num.strip_prefix("0x") {
                u8::from_str_radix(hex, 16).ok()?
            } else {
                num.parse::<u8>().ok()?
            };
            (v == n && name != "lqagent").then(|| name.to_string())
        })
        .collect()
}

/// iproute2's protocol name files under `dirs` (`/etc/iproute2`, `/usr/share/iproute2`):
/// `rt_protos` and `rt_protos.d/*.conf`, in a stable order.
fn protos_files(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in dirs {
        out.push(d.join("rt_protos"));
        if let Ok(rd) = std::fs::read_dir(d.join("rt_protos.d")) {
            let mut confs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            confs.sort();
            out.extend(confs);
        }
    }
    out
}

/// Refuse `routes.protocol` when an `rt_protos` file under `dirs` names it for someone else.
pub(crate) fn check_protocol_files(n: u8, dirs: &[&Path]) -> Result<(), ConfigError> {
    for file in protos_files(dirs) {
        // Files are small; an unreadable or absent one says nothing.
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Some(name) = protos_file_names(&text, n).first() {
            return Err(ConfigError::Invalid {
                key: "routes.protocol".into(),
                message: format!(
                    "{n} is {name:?} in {}: reconcile deletes every route of this protocol it did \
                     not make, so it would delete that daemon's routes; pick an unused number \
                     (default 211)",
                    file.display()
                ),
            });
        }
    }
    Ok(())
}

/// Refuse a state directory the agent cannot write: it exists and a file cannot be created in
/// it, or it does not exist and its nearest existing parent is not writable.
pub(crate) fn check_state_dir(dir: &Path) -> Result<(), ConfigError> {
    let err = |why: String| ConfigError::Invalid {
        key: "state_dir".into(),
        message: format!(
            "{}: {why}; the binding snapshot could not be saved and routes would be lost on restart",
            dir.display()
        ),
    };
    let mut probe_dir = dir;
    while !probe_dir.exists() {
        probe_dir = probe_dir
            .parent()
            .ok_or_else(|| err("no existing parent directory".into()))?;
    }
    if !probe_dir.is_dir() {
        return Err(err(format!("{} is not a directory", probe_dir.display())));
    }
    let probe = probe_dir.join(format!(".lqagent-write-check.{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if probe_dir == dir => Err(err(format!("not writable ({e})"))),
        Err(e) => Err(err(format!(
            "does not exist and {} is not writable ({e})",
            probe_dir.display()
        ))),
    }
}

impl Config {
    /// The checks against this host (see the module docs); `check-config` and the daemon run
    /// them after [`Config::load`](Config::load).
    pub fn check_host(&self) -> Result<(), ConfigError> {
        self.check_host_for_run()?;
        self.check_state_dir()
    }

    /// The host checks that stop `lqagent run`. An unwritable state directory is not one of
    /// them: persistence may fail, routing may not (the daemon starts with persistence
    /// degraded and says so); `check-config` still refuses it.
    pub fn check_host_for_run(&self) -> Result<(), ConfigError> {
        check_protocol_files(
            self.routes.protocol,
            &[Path::new("/etc/iproute2"), Path::new("/usr/share/iproute2")],
        )?;
        self.show_gid().map(|_| ())
    }

    /// Whether `state_dir` can be written (or created).
    pub fn check_state_dir(&self) -> Result<(), ConfigError> {
        check_state_dir(&self.state_dir)
    }

    /// `control.show_group` as a gid (a number is taken as is, a name is looked up in
    /// `/etc/group`); an unknown group is an error naming the key.
    pub fn show_gid(&self) -> Result<Option<u32>, ConfigError> {
        let Some(name) = &self.control.show_group else {
            return Ok(None);
        };
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        crate::control::access::group_id(name, &groups)
            .map(Some)
            .ok_or_else(|| ConfigError::Invalid {
                key: "control.show_group".into(),
                message: format!("no group {name:?} in /etc/group"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rt_protos_lines_are_read_like_iproute2() {
        let text = "# comment\n186\tbgp\n0x10 dhcp # trailing\n211 lqagent\n 42 babel\nbad line\n";
        assert_eq!(protos_file_names(text, 186), ["bgp"]);
        assert_eq!(protos_file_names(text, 16), ["dhcp"]);
        assert_eq!(protos_file_names(text, 42), ["babel"]);
        assert!(
            protos_file_names(text, 211).is_empty(),
            "our own name is fine"
        );
        assert!(protos_file_names(text, 200).is_empty());
    }

    #[test]
    fn protocol_files_and_drop_ins_are_consulted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("rt_protos"), "12 bird\n").unwrap();
        std::fs::create_dir(d.path().join("rt_protos.d")).unwrap();
        std::fs::write(d.path().join("rt_protos.d/mine.conf"), "230 mydaemon\n").unwrap();
        std::fs::write(d.path().join("rt_protos.d/ignored.txt"), "231 other\n").unwrap();
        let dirs = [d.path()];
        assert!(check_protocol_files(211, &dirs).is_ok());
        assert!(check_protocol_files(231, &dirs).is_ok(), "only *.conf");
        let e = check_protocol_files(230, &dirs).unwrap_err().to_string();
        assert!(
            e.contains("routes.protocol") && e.contains("mydaemon"),
            "{e}"
        );
    }

    #[test]
    fn state_dir_must_be_creatable_or_writable() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_state_dir(&d.path().join("a/b")).is_ok());
        let file = d.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = check_state_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(
            e.starts_with("state_dir:") && e.contains("not a directory"),
            "{e}"
        );
    }
}
