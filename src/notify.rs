//! systemd readiness protocol (`sd_notify(3)`) over a Unix datagram to `$NOTIFY_SOCKET`:
//! `READY=1` once serving, `WATCHDOG=1` at half of `$WATCHDOG_USEC`, `STOPPING=1` on shutdown.
//! Twenty lines of our own instead of a crate: the protocol is one datagram per state.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// A state change to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    Ready,
    Watchdog,
    Stopping,
    Reloading,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::Ready => "READY=1",
            Notify::Watchdog => "WATCHDOG=1",
            Notify::Stopping => "STOPPING=1",
            Notify::Reloading => "RELOADING=1",
        }
    }
}

/// Send `state` to the socket named by `NOTIFY_SOCKET`. Returns false when not under systemd.
pub fn notify(state: Notify) -> std::io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send_to(&PathBuf::from(path), state).map(|()| true),
        None => Ok(false),
    }
}

/// Send `state` to `path`; a leading `@` names an abstract socket.
pub fn send_to(path: &std::path::Path, state: Notify) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_str().as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_str().as_bytes(), path)?;
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if systemd set it for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        for state in [Notify::Ready, Notify::Watchdog, Notify::Stopping] {
            send_to(&path, state).unwrap();
            let mut buf = [0u8; 64];
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], state.as_str().as_bytes());
        }
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
