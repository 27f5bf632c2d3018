//! systemd readiness protocol (`sd_notify(3)`) over a Unix datagram to `$NOTIFY_SOCKET`:
//! `READY=1` once serving, `WATCHDOG=1` at half of `$WATCHDOG_USEC`, `STOPPING=1` on shutdown.
//! Twenty lines of our own instead of a crate: the protocol is one datagram per state.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use crate::label::labels;
use crate::time::Duration;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

labels! {
    /// A state change to report.
    pub(crate) enum Notify {
        Ready => "READY=1",
        Watchdog => "WATCHDOG=1",
        Stopping => "STOPPING=1",
        Reloading => "RELOADING=1",
    }
}

/// Send `state` to the socket named by `NOTIFY_SOCKET`. Returns false when not under systemd.
pub(crate) fn notify(state: Notify) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send_to(&PathBuf::from(path), state).map(|()| true),
        None => Ok(false),
    }
}

/// Send `state` to `path`; a leading `@` names an abstract socket.
///
/// Never blocks: a datagram the receiver's queue has no room for (`net.unix.max_dgram_qlen`,
/// 10 by default) fails with `WouldBlock` instead of waiting. Why: the main loop sends these
/// from the thread that also watches for SIGTERM; a blocking send to a listener that stopped
/// reading (a hung manager, a test done with its pings) froze the loop in `sendto`, and the
/// agent never stopped. A ping that finds the queue full loses nothing: ten are waiting.
pub(crate) fn send_to(path: &std::path::Path, state: Notify) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.label().as_bytes(), &addr)?;
    } else {
        sock.send_to(state.label().as_bytes(), path)?;
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if systemd set it for this process.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// How often a supervised task beats while idle.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);

/// A counter a long-running task bumps on every loop turn and every [`HEARTBEAT_EVERY`] while
/// idle; `WATCHDOG=1` is only sent while every watched counter moves (a stuck task stops it).
#[derive(Debug, Default)]
pub struct Heartbeat(std::sync::atomic::AtomicU64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A tokio interval of [`HEARTBEAT_EVERY`] whose missed ticks are skipped.
pub(crate) fn heartbeat_timer() -> tokio::time::Interval {
    let mut t = tokio::time::interval(HEARTBEAT_EVERY);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

/// Which of `(name, before, now)` did not move: the stalled tasks (empty: all alive).
pub(crate) fn stalled<'a>(beats: &[(&'a str, u64, u64)]) -> Vec<&'a str> {
    beats
        .iter()
        .filter(|(_, before, now)| now == before)
        .map(|(n, _, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_names_the_counters_that_did_not_move() {
        assert!(stalled(&[("cache", 1, 2), ("routes", 5, 9)]).is_empty());
        assert_eq!(stalled(&[("cache", 3, 3), ("routes", 5, 9)]), vec!["cache"]);
        assert_eq!(
            stalled(&[("cache", 3, 3), ("routes", 9, 9), ("capture", 0, 1)]),
            vec!["cache", "routes"]
        );
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        for state in [Notify::Ready, Notify::Watchdog, Notify::Stopping] {
            send_to(&path, state).unwrap();
            let mut buf = [0u8; 64];
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], state.label().as_bytes());
        }
    }

    #[test]
    fn a_listener_that_stopped_reading_never_blocks_a_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let _rx = UnixDatagram::bind(&path).unwrap();
        // Far more pings than the receive queue holds, never read: each send must return
        // (the queue full → WouldBlock), never wait. A blocking send would hang here, so the
        // sends run on a thread and the test waits for them, bounded.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let results: Vec<_> = (0..200).map(|_| send_to(&path, Notify::Watchdog)).collect();
            let _ = done.send(results);
        });
        let results = finished
            .recv_timeout(crate::time::Duration::from_secs(10))
            .expect("200 sends to a full queue returned");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        let full = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>();
        assert!(!full.is_empty(), "the queue never filled");
        assert!(
            full.iter()
                .all(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "{full:?}"
        );
    }

    #[test]
    fn datagrams_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("lqagent-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::path::Path::new(&format!("@{name}")), Notify::Ready).unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
