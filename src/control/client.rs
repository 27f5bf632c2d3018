//! A blocking client for the control socket, used by `lqagent show|clear` (no runtime needed).

use crate::time::Duration;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{ControlError, Request, Response};

/// How long the CLI waits for the daemon.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer accepted (a `show bindings` of a large box is tens of MB).
pub(crate) const MAX_RESPONSE: u64 = 512 * 1024 * 1024;

/// One connection to the daemon's control socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ControlError> {
        let io = |source| ControlError::Io {
            path: path.display().to_string(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            path: path.to_path_buf(),
        })
    }

    /// Send one request and wait for its answer.
    pub fn request(&mut self, req: &Request) -> Result<Response, ControlError> {
        let io = |source: std::io::Error| {
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                ControlError::Timeout(CLIENT_TIMEOUT)
            } else {
                ControlError::Io {
                    path: self.path.display().to_string(),
                    source,
                }
            }
        };
        let mut line =
            serde_json::to_vec(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io)?;
        let mut answer = Vec::new();
        (&mut self.reader)
            .take(MAX_RESPONSE)
            .read_until(b'\n', &mut answer)
            .map_err(io)?;
        if answer.is_empty() {
            return Err(ControlError::Protocol(
                "the daemon closed the connection without answering".into(),
            ));
        }
        serde_json::from_slice(&answer).map_err(|e| ControlError::Protocol(e.to_string()))
    }
}
