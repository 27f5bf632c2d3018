//! OPTION_STATUS_CODE (RFC 8415 §21.13).
//!
//! ```text
//! body: status-code(2) status-message(*, UTF-8, not NUL-terminated)
//! ```
//! The message is kept as bytes: a server that sends invalid UTF-8 still tells us its status
//! code, and the option still round-trips exactly. [`Status::text`] decodes it lossily for logs.

use super::buf::Writer;
use super::codes::StatusCode;
use super::error::Error;
use std::borrow::Cow;

/// A status code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: StatusCode,
    /// The message bytes as sent (meant to be UTF-8).
    pub message: Vec<u8>,
}

impl Status {
    pub fn new(code: StatusCode, message: &str) -> Self {
        Status {
            code,
            message: message.as_bytes().to_vec(),
        }
    }

    /// The message as text, invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.message)
    }

    pub(crate) fn body_len(&self) -> usize {
        2 + self.message.len()
    }

    pub(crate) fn emit_body(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(self.code.0)?;
        w.put(&self.message)
    }
}
