//! `wire::Error`: why a DHCPv6 message or option could not be read or written, and where.
//!
//! Every variant that comes from parsing carries `at`, the byte offset from the start of the
//! buffer handed to the outermost `parse` (or `new_checked`), so an operator can find the bad
//! byte in a capture. [`Error::label`] gives a short fixed label (its [`ErrorKind`]) for metrics
//! and logs.

use crate::label::labels;

/// A decode or encode failure. Offsets (`at`) are from the start of the outermost buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fixed-size header (message, relay, option or option fixed part) is cut short.
    #[error("truncated {what} at offset {at}: need {need} bytes, have {have}")]
    Truncated {
        at: usize,
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// An option's length field runs past the end of its parent (message or option).
    #[error("option {code} at offset {at} claims {len} bytes but only {room} remain in its parent")]
    OptionOverrun {
        at: usize,
        code: u16,
        len: usize,
        room: usize,
    },
    /// A known option whose length does not fit its layout.
    #[error("option {code} at offset {at} has length {len}, expected {expected}")]
    BadLength {
        at: usize,
        code: u16,
        len: usize,
        expected: &'static str,
    },
    /// Relay chain or option encapsulation deeper than we accept.
    #[error("{what} nested deeper than {limit} levels at offset {at}")]
    TooDeep {
        at: usize,
        what: &'static str,
        limit: usize,
    },
    /// A message of the wrong kind for where it sits (e.g. a client message inside
    /// OPTION_LQ_RELAY_DATA, or OPTION_RELAY_MSG outside a relay message).
    #[error("wrong kind at offset {at}: {what}")]
    WrongKind { at: usize, what: &'static str },
    /// Encoding: a field value does not fit the wire (e.g. a transaction id over 24 bits).
    #[error("value {value} does not fit {what}")]
    FieldRange { what: &'static str, value: u64 },
    /// Encoding: an option body or frame longer than a 16-bit length can say.
    #[error("{what} is {len} bytes, more than 65535")]
    TooLong { what: &'static str, len: usize },
    /// Encoding: the output buffer is smaller than `buffer_len()`.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// TCP framing (RFC 5460 §5.1): a frame announcing zero bytes.
    #[error("bulk leasequery frame of length 0 at stream offset {at}")]
    FrameEmpty { at: u64 },
    /// TCP framing: a frame longer than the configured maximum.
    #[error(
        "bulk leasequery frame of {len} bytes at stream offset {at} exceeds the limit of {max}"
    )]
    FrameOversize { at: u64, len: usize, max: usize },
    /// TCP framing: more bytes pushed than the bounded stream buffer has room for.
    #[error("bulk leasequery stream buffer full: {pushed} bytes pushed, room for {room}")]
    StreamBufferFull { pushed: usize, room: usize },
    /// TCP framing: the stream hit an earlier error and can no longer be read.
    #[error("bulk leasequery stream already failed")]
    StreamFailed,
}

labels! {
    /// What kind of [`Error`] it is, as a fixed label (a metric label value, a log field, the
    /// `reason` of `lqagent decode`'s output): one variant per variant of [`Error`], so `ALL`
    /// pre-registers every label without a hand-kept list.
    pub enum ErrorKind {
        Truncated => "truncated",
        OptionOverrun => "option_overrun",
        BadLength => "bad_length",
        TooDeep => "too_deep",
        WrongKind => "wrong_kind",
        FieldRange => "field_range",
        TooLong => "too_long",
        BufferTooSmall => "buffer_too_small",
        FrameEmpty => "frame_empty",
        FrameOversize => "frame_oversize",
        StreamBufferFull => "stream_buffer_full",
        StreamFailed => "stream_failed",
    }
}

impl Error {
    /// The kind of this error, without its offsets and values.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Truncated { .. } => ErrorKind::Truncated,
            Error::OptionOverrun { .. } => ErrorKind::OptionOverrun,
            Error::BadLength { .. } => ErrorKind::BadLength,
            Error::TooDeep { .. } => ErrorKind::TooDeep,
            Error::WrongKind { .. } => ErrorKind::WrongKind,
            Error::FieldRange { .. } => ErrorKind::FieldRange,
            Error::TooLong { .. } => ErrorKind::TooLong,
            Error::BufferTooSmall { .. } => ErrorKind::BufferTooSmall,
            Error::FrameEmpty { .. } => ErrorKind::FrameEmpty,
            Error::FrameOversize { .. } => ErrorKind::FrameOversize,
            Error::StreamBufferFull { .. } => ErrorKind::StreamBufferFull,
            Error::StreamFailed => ErrorKind::StreamFailed,
        }
    }

    /// The label of this error's kind (see `crate::label`).
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }
}
