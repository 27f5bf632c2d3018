//! nfnetlink messages as we write them (*pure*: bytes out): the netlink header with its
//! `nfgenmsg`, and attributes, flat or nested. One writer for both of the trigger's requests —
//! `nflog`'s bind of its log group and `nfset`'s set-element batches — so their framing cannot
//! drift apart. Netlink and attribute headers are in host order; `nfgenmsg`'s `res_id` is in
//! network order.

/// `NLM_F_REQUEST`: a request (every message we send).
pub(super) const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: answer with an ack (or the error).
pub(super) const NLM_F_ACK: u16 = 0x4;

/// An nlmsghdr and nfgenmsg; the length is fixed up by [`finish`].
pub(super) fn push_header(b: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) {
    b.extend_from_slice(&16u32.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[family, 0]);
    b.extend_from_slice(&res_id.to_be_bytes());
    let start = b.len() - 20;
    finish(b, start);
}

/// Writes the length of the message or attribute starting at `start` (u32 for a message,
/// u16 for an attribute: `attr`).
pub(super) fn finish(b: &mut [u8], start: usize) {
    let len = (b.len() - start) as u32;
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Opens an attribute; returns where it starts, for [`close`].
pub(super) fn open(b: &mut Vec<u8>, ty: u16) -> usize {
    let at = b.len();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&ty.to_ne_bytes());
    at
}

/// Closes an attribute opened at `at`: its length (at most 64 KiB, which the callers keep to),
/// then padding to 4.
pub(super) fn close(b: &mut Vec<u8>, at: usize) {
    let len = b.len() - at;
    debug_assert!(len <= usize::from(u16::MAX));
    b[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    b.resize(at + ((len + 3) & !3), 0);
}

/// An attribute of type `ty` holding `value`, padded to 4.
pub(super) fn attr(b: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let at = open(b, ty);
    b.extend_from_slice(value);
    close(b, at);
}
