//! RFC 5460 §5.1 TCP framing for bulk (and RFC 7653 active) leasequery: each DHCPv6 message
//! on the stream is preceded by its length as a 2-byte big-endian integer.
//!
//! ```text
//! message-size(2) DHCPv6 message(message-size) message-size(2) ...
//! ```
//! [`FrameDecoder`] is fed whatever bytes the socket gives and hands back complete frames. It is
//! bounded: it holds at most [`FrameConfig::buffer_capacity`] bytes, refuses pushes beyond that
//! (the shell reads at most [`FrameDecoder::room`] bytes), and treats a zero-length frame or one
//! over [`FrameConfig::max_frame`] as a fatal stream error (the length is all that tells frames
//! apart, so the stream cannot be resynchronised: close the connection). After an error every
//! later call returns `Error::StreamFailed`.

use super::error::Error;
use super::owned::Message;

/// Size of the length prefix.
pub(crate) const FRAME_HEADER_LEN: usize = 2;

/// Limits for a [`FrameDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameConfig {
    /// Largest message accepted (at most 65535, the most the prefix can say).
    pub max_frame: usize,
    /// Most bytes held at once; raised to at least one maximal frame plus its prefix.
    pub buffer_capacity: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            max_frame: usize::from(u16::MAX),
            buffer_capacity: 2 * (FRAME_HEADER_LEN + usize::from(u16::MAX)),
        }
    }
}

/// Splits a TCP byte stream into DHCPv6 messages.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    start: usize,
    capacity: usize,
    max_frame: usize,
    /// Stream offset of `buf[start]`, for error reports.
    stream_offset: u64,
    failed: bool,
}

impl FrameDecoder {
    pub fn new(config: FrameConfig) -> Self {
        let max_frame = config.max_frame.min(usize::from(u16::MAX));
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            capacity: config.buffer_capacity.max(FRAME_HEADER_LEN + max_frame),
            max_frame,
            stream_offset: 0,
            failed: false,
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// How many more bytes [`FrameDecoder::push`] accepts now.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.buffered())
    }

    /// Appends bytes read from the stream; refuses (taking nothing) if they do not fit.
    pub fn push(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.failed {
            return Err(Error::StreamFailed);
        }
        let room = self.room();
        if data.len() > room {
            return Err(Error::StreamBufferFull {
                pushed: data.len(),
                room,
            });
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, Error> {
        if self.failed {
            return Err(Error::StreamFailed);
        }
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        let [h0, h1, ..] = *pending else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([h0, h1]));
        if len == 0 {
            self.failed = true;
            return Err(Error::FrameEmpty {
                at: self.stream_offset,
            });
        }
        if len > self.max_frame {
            self.failed = true;
            return Err(Error::FrameOversize {
                at: self.stream_offset,
                len,
                max: self.max_frame,
            });
        }
        let end = self.start + FRAME_HEADER_LEN + len;
        let Some(frame) = self.buf.get(self.start + FRAME_HEADER_LEN..end) else {
            return Ok(None);
        };
        self.start = end;
        self.stream_offset += (FRAME_HEADER_LEN + len) as u64;
        Ok(Some(frame))
    }
}

/// The length prefix for a message of `len` bytes.
pub fn frame_header(len: usize) -> Result<[u8; 2], Error> {
    match u16::try_from(len) {
        Ok(0) => Err(Error::FrameEmpty { at: 0 }),
        Ok(n) => Ok(n.to_be_bytes()),
        Err(_) => Err(Error::TooLong {
            what: "bulk leasequery frame",
            len,
        }),
    }
}

/// Bytes a framed message takes on the stream.
pub(crate) fn framed_len(msg: &Message) -> usize {
    FRAME_HEADER_LEN + msg.buffer_len()
}

/// Writes `msg` with its length prefix into `buf` (at least [`framed_len`] bytes); returns the
/// bytes written.
pub(crate) fn emit_frame(msg: &Message, buf: &mut [u8]) -> Result<usize, Error> {
    let have = buf.len();
    let (head, body) = buf
        .split_at_mut_checked(FRAME_HEADER_LEN)
        .ok_or(Error::BufferTooSmall {
            need: framed_len(msg),
            have,
        })?;
    let n = msg.emit(body)?;
    head.copy_from_slice(&frame_header(n)?);
    Ok(FRAME_HEADER_LEN + n)
}

/// `msg` framed, as a new vector.
pub fn frame_to_vec(msg: &Message) -> Result<Vec<u8>, Error> {
    let mut v = vec![0; framed_len(msg)];
    let n = emit_frame(msg, &mut v)?;
    v.truncate(n);
    Ok(v)
}
