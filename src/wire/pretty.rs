//! A decoded message for people: an indented text tree and, through serde, JSON — the
//! codec's outside face (`lqagent decode`). Pure: bytes in, a [`Decoded`] tree out.
//!
//! The tree is built from the borrowed view ([`MessageView`]), not from `Message::parse`, so
//! a malformed message still shows everything that could be read: an option whose body breaks
//! its layout becomes an error node (offset, error, its bytes) and its siblings after it are still
//! read; an option list that overruns its parent ends in an error node (nothing after it can be
//! framed). Relay chains (RELAY_MSG, LQ_RELAY_DATA) and encapsulated options (IA_NA, IA_PD,
//! IAADDR, CLIENT_DATA, LQ_QUERY, ...) are unfolded to any depth the codec accepts; codes get
//! their RFC names, DUIDs are decoded (DUID-LLT time as a UTC date), lifetimes say "infinite".
//!
//! Invariant (pinned by the `message_decode` fuzz target): `Decoded::new(b).malformed == 0`
//! exactly when `Message::parse(b)` succeeds. Nothing here panics on any input; hex dumps of bad
//! bytes are cut at [`MAX_DUMP`] bytes.

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use serde::Serialize;

use super::codes::MessageType;
use super::duid::DuidKind;
use super::error::Error;
use super::ia::INFINITE_LIFETIME;
use super::view::{MessageView, OptionRef, OptionView, OptionsIter};

/// Most bytes of a malformed part shown in hex.
pub(crate) const MAX_DUMP: usize = 64;

/// One message, decoded as far as it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decoded {
    /// Number of malformed parts (0: the message is valid).
    pub malformed: usize,
    pub message: MessageNode,
}

/// A message (top level, in RELAY_MSG, or the relay in LQ_RELAY_DATA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageNode {
    /// Offset of the message's first byte in the decoded buffer.
    pub offset: usize,
    pub length: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop_count: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_address: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<Ipv6Addr>,
    pub options: Vec<OptionNode>,
    /// Set when the header itself could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorNode>,
}

/// One option, or an error node where an option list stops being readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionNode {
    pub offset: usize,
    /// Absent for an error node that ended its option list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
    /// Body length (without the 4-byte header).
    pub length: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Encapsulated options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<OptionNode>,
    /// The message in RELAY_MSG, or the relay message in LQ_RELAY_DATA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<MessageNode>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorNode>,
}

/// Where and why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorNode {
    pub offset: usize,
    /// [`Error::reason`]: a short fixed label.
    pub reason: &'static str,
    /// The full error text.
    pub error: String,
    /// The unreadable bytes in hex (at most [`MAX_DUMP`]).
    pub bytes: String,
}

/// The typed content of an option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    Duid(DuidNode),
    Ia {
        iaid: u32,
        t1: u32,
        t2: u32,
    },
    IaTa {
        iaid: u32,
    },
    Address {
        address: Ipv6Addr,
        preferred: u32,
        valid: u32,
    },
    Prefix {
        prefix: String,
        preferred: u32,
        valid: u32,
    },
    Codes {
        codes: Vec<CodeNode>,
    },
    /// ELAPSED_TIME, in hundredths of a second.
    ElapsedTime {
        hundredths: u16,
    },
    Status {
        code: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'static str>,
        message: String,
    },
    /// Opaque bytes (INTERFACE_ID, SUBSCRIBER_ID, unknown options), with text if printable.
    Bytes {
        hex: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    RemoteId {
        enterprise: u32,
        hex: String,
    },
    LinkLayer {
        hw_type: u16,
        address: String,
    },
    Query {
        query_type: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        query_name: Option<&'static str>,
        link_address: Ipv6Addr,
    },
    /// CLT_TIME: seconds since the server last heard from the client.
    Seconds {
        seconds: u32,
    },
    /// LQ_BASE/START/END_TIME: seconds since 1970-01-01 UTC.
    Time {
        seconds: u32,
        utc: String,
    },
    RelayData {
        peer_address: Ipv6Addr,
    },
    Links {
        addresses: Vec<Ipv6Addr>,
    },
}

/// An option code with its name (ORO).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeNode {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
}

/// A DUID, decoded when its type is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuidNode {
    /// "LLT", "EN", "LL", "UUID" or "other".
    pub kind: &'static str,
    /// The whole DUID in hex (what the lease files and `lqagent query --client-id` use).
    pub hex: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hw_type: Option<u16>,
    /// DUID-LLT: seconds since 2000-01-01 UTC, and as a date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_layer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

impl Decoded {
    /// Decodes `bytes` (one DHCPv6 message) as far as it goes.
    pub fn new(bytes: &[u8]) -> Decoded {
        let mut b = Builder { malformed: 0 };
        let message = match MessageView::new_checked(bytes) {
            Ok(v) => b.message(v, 0, bytes.len()),
            Err(e) => b.bad_message(&e, 0, bytes),
        };
        Decoded {
            malformed: b.malformed,
            message,
        }
    }

    /// The indented text tree, one line per message header and option.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        text_message(&mut out, &self.message, 0);
        out
    }
}

struct Builder {
    malformed: usize,
}

impl Builder {
    fn error(&mut self, e: &Error, offset: usize, bytes: &[u8]) -> ErrorNode {
        self.malformed += 1;
        ErrorNode {
            offset: error_offset(e).unwrap_or(offset),
            reason: e.label(),
            error: e.to_string(),
            bytes: dump(bytes),
        }
    }

    fn bad_message(&mut self, e: &Error, offset: usize, bytes: &[u8]) -> MessageNode {
        MessageNode {
            offset,
            length: bytes.len(),
            msg_type: bytes.first().copied(),
            type_name: bytes.first().and_then(|t| MessageType(*t).name()),
            transaction_id: None,
            hop_count: None,
            link_address: None,
            peer_address: None,
            options: Vec::new(),
            error: Some(self.error(e, offset, bytes)),
        }
    }

    fn message(&mut self, v: MessageView<'_>, offset: usize, length: usize) -> MessageNode {
        let mut node = MessageNode {
            offset,
            length,
            msg_type: Some(v.msg_type().0),
            type_name: v.msg_type().name(),
            transaction_id: None,
            hop_count: None,
            link_address: None,
            peer_address: None,
            options: Vec::new(),
            error: None,
        };
        match v {
            MessageView::Client(c) => node.transaction_id = Some(c.transaction_id()),
            MessageView::Relay(r) => {
                node.hop_count = Some(r.hop_count());
                node.link_address = Some(r.link_address());
                node.peer_address = Some(r.peer_address());
            }
        }
        node.options = self.options(v.options());
        node
    }

    fn options(&mut self, it: OptionsIter<'_>) -> Vec<OptionNode> {
        let mut out = Vec::new();
        let mut rest = it;
        loop {
            let remaining = rest.remaining();
            match rest.next() {
                None => break,
                Some(Ok(o)) => out.push(self.option(o)),
                Some(Err(e)) => {
                    let offset = error_offset(&e).unwrap_or(0);
                    out.push(OptionNode {
                        offset,
                        code: None,
                        name: None,
                        length: remaining.len(),
                        value: None,
                        options: Vec::new(),
                        message: None,
                        error: Some(self.error(&e, offset, remaining)),
                    });
                    break;
                }
            }
        }
        out
    }

    fn option(&mut self, o: OptionView<'_>) -> OptionNode {
        let mut node = OptionNode {
            offset: o.offset(),
            code: Some(o.code().0),
            name: o.code().name(),
            length: o.data().len(),
            value: None,
            options: Vec::new(),
            message: None,
            error: None,
        };
        let kind = match o.kind() {
            Ok(k) => k,
            Err(e) => {
                node.error = Some(self.error(&e, o.offset(), o.data()));
                return node;
            }
        };
        let body_at = o.offset() + 4;
        node.value = match kind {
            OptionRef::ClientId(d) | OptionRef::ServerId(d) | OptionRef::RelayId(d) => {
                Some(Value::Duid(duid(d)))
            }
            OptionRef::IaNa(ia) | OptionRef::IaPd(ia) => {
                node.options = self.options(ia.options);
                Some(Value::Ia {
                    iaid: ia.iaid,
                    t1: ia.t1,
                    t2: ia.t2,
                })
            }
            OptionRef::IaTa { iaid, options } => {
                node.options = self.options(options);
                Some(Value::IaTa { iaid })
            }
            OptionRef::IaAddr(a) => {
                node.options = self.options(a.options);
                Some(Value::Address {
                    address: a.addr,
                    preferred: a.preferred,
                    valid: a.valid,
                })
            }
            OptionRef::IaPrefix(p) => {
                node.options = self.options(p.options);
                Some(Value::Prefix {
                    prefix: format!("{}/{}", p.prefix_addr, p.prefix_len),
                    preferred: p.preferred,
                    valid: p.valid,
                })
            }
            OptionRef::Oro(codes) => Some(Value::Codes {
                codes: codes
                    .codes()
                    .map(|c| CodeNode {
                        code: c.0,
                        name: c.name(),
                    })
                    .collect(),
            }),
            OptionRef::ElapsedTime(hundredths) => Some(Value::ElapsedTime { hundredths }),
            OptionRef::RelayMsg(m) => {
                node.message = Some(Box::new(self.message(m, body_at, o.data().len())));
                None
            }
            OptionRef::StatusCode(s) => Some(Value::Status {
                code: s.code.0,
                name: s.code.name(),
                message: String::from_utf8_lossy(s.message).into_owned(),
            }),
            OptionRef::InterfaceId(b) | OptionRef::SubscriberId(b) => Some(bytes_value(b)),
            OptionRef::RemoteId {
                enterprise,
                remote_id,
            } => Some(Value::RemoteId {
                enterprise,
                hex: hex::encode(remote_id),
            }),
            OptionRef::ClientLinklayerAddr { hw_type, addr } => Some(Value::LinkLayer {
                hw_type,
                address: colon_hex(addr),
            }),
            OptionRef::LqQuery(q) => {
                node.options = self.options(q.options);
                Some(Value::Query {
                    query_type: q.query_type.0,
                    query_name: q.query_type.name(),
                    link_address: q.link_address,
                })
            }
            OptionRef::ClientData(options) => {
                node.options = self.options(options);
                None
            }
            OptionRef::CltTime(seconds) => Some(Value::Seconds { seconds }),
            OptionRef::LqRelayData(d) => {
                let relay_at = body_at + 16;
                let relay_len = o.data().len().saturating_sub(16);
                let relay = self.message(MessageView::Relay(d.relay), relay_at, relay_len);
                node.message = Some(Box::new(relay));
                Some(Value::RelayData {
                    peer_address: d.peer_address,
                })
            }
            OptionRef::LqClientLink(links) => Some(Value::Links {
                addresses: links.addresses().collect(),
            }),
            OptionRef::LqBaseTime(s) | OptionRef::LqStartTime(s) | OptionRef::LqEndTime(s) => {
                Some(Value::Time {
                    seconds: s,
                    utc: utc(i64::from(s)),
                })
            }
            _ => Some(bytes_value(o.data())),
        };
        node
    }
}

fn error_offset(e: &Error) -> Option<usize> {
    match e {
        Error::Truncated { at, .. }
        | Error::OptionOverrun { at, .. }
        | Error::BadLength { at, .. }
        | Error::TooDeep { at, .. }
        | Error::WrongKind { at, .. } => Some(*at),
        _ => None,
    }
}

fn dump(b: &[u8]) -> String {
    let shown = b.get(..MAX_DUMP).unwrap_or(b);
    let mut s = hex::encode(shown);
    if shown.len() < b.len() {
        s.push_str("...");
    }
    s
}

fn colon_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn bytes_value(b: &[u8]) -> Value {
    let printable = !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ');
    Value::Bytes {
        hex: hex::encode(b),
        text: printable.then(|| String::from_utf8_lossy(b).into_owned()),
    }
}

/// Seconds between 1970-01-01 and 2000-01-01 (the DUID-LLT epoch, RFC 8415 §11.2).
const DUID_EPOCH: i64 = 946_684_800;

fn duid(bytes: &[u8]) -> DuidNode {
    let mut n = DuidNode {
        kind: "other",
        hex: hex::encode(bytes),
        hw_type: None,
        time: None,
        time_utc: None,
        link_layer: None,
        enterprise: None,
        identifier: None,
    };
    match DuidKind::parse(bytes) {
        DuidKind::Llt {
            hw_type,
            time,
            link_layer,
        } => {
            n.kind = "LLT";
            n.hw_type = Some(hw_type);
            n.time = Some(time);
            n.time_utc = Some(utc(DUID_EPOCH + i64::from(time)));
            n.link_layer = Some(colon_hex(&link_layer));
        }
        DuidKind::En {
            enterprise,
            identifier,
        } => {
            n.kind = "EN";
            n.enterprise = Some(enterprise);
            n.identifier = Some(hex::encode(identifier));
        }
        DuidKind::Ll {
            hw_type,
            link_layer,
        } => {
            n.kind = "LL";
            n.hw_type = Some(hw_type);
            n.link_layer = Some(colon_hex(&link_layer));
        }
        DuidKind::Uuid(u) => {
            n.kind = "UUID";
            n.identifier = Some(hex::encode(u));
        }
        DuidKind::Other(_) => {}
    }
    n
}

/// `secs` since 1970-01-01 as an RFC 3339 UTC time (proleptic Gregorian calendar).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date: H. Hinnant's algorithm (public domain), valid for any i64 day count here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn lifetime(s: u32) -> String {
    if s == INFINITE_LIFETIME {
        "infinite".to_string()
    } else {
        format!("{s}s")
    }
}

fn named(name: Option<&str>, code: impl std::fmt::Display) -> String {
    match name {
        Some(n) => format!("{n}({code})"),
        None => format!("unknown({code})"),
    }
}

fn text_message(out: &mut String, m: &MessageNode, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = write!(out, "{pad}");
    if let Some(t) = m.msg_type {
        let _ = write!(out, "{}", named(m.type_name, t));
    }
    if let Some(x) = m.transaction_id {
        let _ = write!(out, " xid 0x{x:06x}");
    }
    if let (Some(h), Some(l), Some(p)) = (m.hop_count, m.link_address, m.peer_address) {
        let _ = write!(out, " hop-count {h} link-address {l} peer-address {p}");
    }
    let _ = writeln!(out, " ({} bytes @{})", m.length, m.offset);
    if let Some(e) = &m.error {
        text_error(out, e, depth + 1);
    }
    for o in &m.options {
        text_option(out, o, depth + 1);
    }
}

fn text_error(out: &mut String, e: &ErrorNode, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}!! MALFORMED @{}: {}", e.offset, e.error);
    if !e.bytes.is_empty() {
        let _ = writeln!(out, "{pad}   bytes {}", e.bytes);
    }
}

fn text_option(out: &mut String, o: &OptionNode, depth: usize) {
    let Some(code) = o.code else {
        if let Some(e) = &o.error {
            text_error(out, e, depth);
        }
        return;
    };
    let pad = "  ".repeat(depth);
    let _ = write!(
        out,
        "{pad}{} len {} @{}",
        named(o.name, code),
        o.length,
        o.offset
    );
    if let Some(v) = &o.value {
        let _ = write!(out, ": {}", text_value(v));
    }
    out.push('\n');
    if let Some(e) = &o.error {
        text_error(out, e, depth + 1);
    }
    for inner in &o.options {
        text_option(out, inner, depth + 1);
    }
    if let Some(m) = &o.message {
        text_message(out, m, depth + 1);
    }
}

fn text_value(v: &Value) -> String {
    match v {
        Value::Duid(d) => {
            let mut s = format!("DUID-{}", d.kind);
            if let Some(h) = d.hw_type {
                let _ = write!(s, " hw-type {h}");
            }
            if let (Some(t), Some(u)) = (d.time, &d.time_utc) {
                let _ = write!(s, " time {t} ({u})");
            }
            if let Some(l) = &d.link_layer {
                let _ = write!(s, " link-layer {l}");
            }
            if let Some(e) = d.enterprise {
                let _ = write!(s, " enterprise {e}");
            }
            if let Some(i) = &d.identifier {
                let _ = write!(s, " id {i}");
            }
            let _ = write!(s, " [{}]", d.hex);
            s
        }
        Value::Ia { iaid, t1, t2 } => {
            format!(
                "iaid 0x{iaid:08x} T1 {} T2 {}",
                lifetime(*t1),
                lifetime(*t2)
            )
        }
        Value::IaTa { iaid } => format!("iaid 0x{iaid:08x}"),
        Value::Address {
            address,
            preferred,
            valid,
        } => format!(
            "{address} preferred {} valid {}",
            lifetime(*preferred),
            lifetime(*valid)
        ),
        Value::Prefix {
            prefix,
            preferred,
            valid,
        } => format!(
            "{prefix} preferred {} valid {}",
            lifetime(*preferred),
            lifetime(*valid)
        ),
        Value::Codes { codes } => codes
            .iter()
            .map(|c| named(c.name, c.code))
            .collect::<Vec<_>>()
            .join(" "),
        Value::ElapsedTime { hundredths } => {
            format!("{}.{:02}s", hundredths / 100, hundredths % 100)
        }
        Value::Status {
            code,
            name,
            message,
        } => format!("{} {message:?}", named(*name, code)),
        Value::Bytes { hex, text } => match text {
            Some(t) => format!("{t:?} [{hex}]"),
            None => format!("[{hex}]"),
        },
        Value::RemoteId { enterprise, hex } => format!("enterprise {enterprise} [{hex}]"),
        Value::LinkLayer { hw_type, address } => format!("hw-type {hw_type} {address}"),
        Value::Query {
            query_type,
            query_name,
            link_address,
        } => format!(
            "{} link-address {link_address}",
            named(*query_name, query_type)
        ),
        Value::Seconds { seconds } => format!("{seconds}s"),
        Value::Time { seconds, utc } => format!("{seconds} ({utc})"),
        Value::RelayData { peer_address } => format!("peer-address {peer_address}"),
        Value::Links { addresses } => addresses
            .iter()
            .map(Ipv6Addr::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    }
}
