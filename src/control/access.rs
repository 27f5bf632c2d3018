//! Who may do what on the control socket, decided from the peer's kernel-verified credentials
//! (`SO_PEERCRED`), never from anything the client says.
//!
//! `show …` only reads: root, the service's own user and members of `control.show_group` may.
//! `clear …` withdraws routes subscribers depend on: only root and the service's user may.
//! Without `show_group` the socket file's mode (0660, the service's group) keeps everyone else
//! from connecting at all. With it the file is 0666 and this check is the gate: a peer that may
//! not even `show` is refused as soon as it connects (see `server.rs` for why the file cannot
//! carry the group instead).
//!
//! The peer's supplementary groups come from the socket (`SO_PEERGROUPS`), not from
//! `/proc/PID/status`: the packaged unit's `ProtectProc=invisible` hides other users' processes
//! from the daemon, so reading them there refused every member whose membership was
//! supplementary, and a pid can be reused by the time it is read. The socket's record is what
//! the kernel saw at `connect()`, like `SO_PEERCRED`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

use super::Request;

/// The peer of one connection, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The policy of one control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The user the daemon runs as (`lqagent` under the packaged unit).
    pub service_uid: u32,
    /// `control.show_group`, resolved: its members may `show`.
    pub show_gid: Option<u32>,
}

/// Whether `request` only reads.
pub(crate) fn read_only(request: &Request) -> bool {
    match request {
        Request::ShowBindings(_) | Request::ShowStats | Request::ShowServers => true,
        Request::ClearBindings(_) | Request::ClearBinding { .. } => false,
    }
}

impl Access {
    /// The policy for this process: the service user is our effective uid.
    pub fn for_this_process(show_gid: Option<u32>) -> std::io::Result<Access> {
        Ok(Access {
            service_uid: std::fs::metadata("/proc/self")?.uid(),
            show_gid,
        })
    }

    /// Root or the service user: may do everything, and always gets a connection (the
    /// control server's reserved slots and eviction, [`super::slots`]).
    pub fn privileged(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.service_uid
    }

    /// May `peer` (supplementary groups `groups`) make any request at all? The gate at
    /// `connect()`: a peer refused here could not even `show`, so its connection is answered
    /// with the reason and closed instead of holding one of the few client slots.
    pub fn may_connect(&self, peer: &Peer, groups: &[u32]) -> Result<(), String> {
        self.check(peer, || groups.to_vec(), &Request::ShowStats)
    }

    /// May `peer` (whose supplementary groups `groups` yields, read only when needed) make
    /// `request`? `Err` says why not.
    pub fn check(
        &self,
        peer: &Peer,
        groups: impl FnOnce() -> Vec<u32>,
        request: &Request,
    ) -> Result<(), String> {
        if self.privileged(peer) {
            return Ok(());
        }
        if !read_only(request) {
            return Err(format!(
                "permission denied: clear is for root and the service user (uid {}); you are uid {}",
                self.service_uid, peer.uid
            ));
        }
        match self.show_gid {
            Some(g) if peer.gid == g || groups().contains(&g) => Ok(()),
            Some(g) => Err(format!(
                "permission denied: show is for root, the service user and group {g} \
                 (control.show_group); uid {} is not in it",
                peer.uid
            )),
            None => Err(format!(
                "permission denied: show is for root and the service user (uid {}); set \
                 control.show_group to let a group read",
                self.service_uid
            )),
        }
    }
}

/// `NGROUPS_MAX` on Linux: the kernel never reports more supplementary groups than this.
const NGROUPS_MAX: usize = 65536;

/// The supplementary groups of the process at the other end of the Unix socket `sock`, as the
/// kernel recorded them at `connect()` (`SO_PEERGROUPS`, Linux 4.13). Starts with room for 64
/// and grows once to what the kernel says it needs (bounded by [`NGROUPS_MAX`]).
pub(crate) fn peer_groups(sock: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut buf: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (buf.len() * GID) as libc::socklen_t;
        // SAFETY: `buf` is valid for writes of `len` bytes; the kernel writes at most `len`
        // bytes and stores the length it wrote (or, on ERANGE, the length it needs) in `len`.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            buf.truncate((len as usize / GID).min(buf.len()));
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        let need = len as usize / GID;
        if e.raw_os_error() == Some(libc::ERANGE) && need > buf.len() && need <= NGROUPS_MAX {
            buf.resize(need, 0);
            continue;
        }
        return Err(e);
    }
}

/// The gid of group `name` in an `/etc/group`-format text; a number is taken as the gid.
pub(crate) fn group_id(name: &str, etc_group: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::BindingFilter;

    const ACCESS: Access = Access {
        service_uid: 998,
        show_gid: Some(997),
    };

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: Some(1),
        }
    }

    #[test]
    fn show_for_the_group_clear_for_root_and_the_service_only() {
        let show = Request::ShowStats;
        let clear = Request::ClearBindings(BindingFilter::default());
        for uid in [0, 998] {
            assert!(ACCESS.check(&peer(uid, 5), Vec::new, &clear).is_ok());
        }
        assert!(ACCESS.check(&peer(1000, 997), Vec::new, &show).is_ok());
        assert!(ACCESS.check(&peer(1000, 5), || vec![4, 997], &show).is_ok());
        assert!(ACCESS.check(&peer(1000, 5), || vec![4], &show).is_err());
        let e = ACCESS
            .check(&peer(1000, 997), || vec![997], &clear)
            .unwrap_err();
        assert!(e.contains("clear is for root and the service user"), "{e}");
        let no_group = Access {
            show_gid: None,
            ..ACCESS
        };
        assert!(no_group.check(&peer(1000, 997), Vec::new, &show).is_err());
    }

    /// The `Groups:` of a `/proc/PID/status` text: what this process's groups are, to compare
    /// with what the socket reports.
    fn status_groups(status: &str) -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Only as strong as this process's groups are many (none under some CI runners); the
    /// loopback test `unprivileged_peer_may_show_with_the_group_but_never_clear` runs a peer
    /// whose membership is supplementary only, and fails when the groups are not read.
    #[test]
    fn the_socket_reports_the_peers_supplementary_groups() {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_fd()).unwrap();
        let mut want = status_groups(&std::fs::read_to_string("/proc/self/status").unwrap());
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        // Not a Unix socket: an error, never a made-up list.
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(peer_groups(f.as_fd()).is_err());
    }

    #[test]
    fn groups_and_status_lines_parse() {
        let group = "root:x:0:\nlqagent:x:997:alice,bob\nbroken\n";
        assert_eq!(group_id("lqagent", group), Some(997));
        assert_eq!(group_id("1234", group), Some(1234));
        assert_eq!(group_id("nope", group), None);
        assert_eq!(group_id("broken", group), None);
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 997 \nNgid:\t0\n";
        assert_eq!(status_groups(status), vec![4, 24, 997]);
        assert!(status_groups("Name: x\n").is_empty());
    }
}
