//! Telling "the peer closed the connection" from "nothing came before the read timeout": a
//! test that treats both as closed passes against a server that never closes.

use std::io::{ErrorKind, Result};

/// Panics unless `read` (the result of a read or `read_line` on a stream with a read timeout)
/// shows the peer closed: end of stream, or a reset. A timeout or data fails, naming `what`.
pub fn assert_closed(read: Result<usize>, what: &str) {
    match read {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: still open (read timed out)")
        }
        other => panic!("{what}: not closed: {other:?}"),
    }
}
