//! Decoding into the owned form: every `parse` builds its result from the borrowed view.
//!
//! There is one parser. The view ([`MessageView`], [`OptionView::kind`]) checks every header,
//! length, nesting bound and placement rule; this module only copies what a checked view yields
//! into owned values, in wire order, stopping at the first error the view reports. So the owned
//! and the borrowed path accept the same bytes and fail with the same [`Error`] at the same
//! offset, by construction rather than by keeping two copies of each check in step.

use super::duid::Duid;
use super::error::Error;
use super::owned::{
    ClientData, ClientMessage, DhcpOption, Ia, IaAddr, IaPrefix, IaTa, LqQuery, LqRelayData,
    Message, Options, RelayMessage,
};
use super::status::Status;
use super::view::{
    ClientView, IaAddrView, IaPrefixView, IaView, LqQueryView, MessageView, OptionRef, OptionView,
    OptionsIter, RelayView,
};

impl Message {
    /// Parses a whole message from `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Message, Error> {
        message(MessageView::new_checked(bytes)?)
    }
}

impl ClientMessage {
    /// Parses a client/server message; a relay type is `Error::WrongKind`.
    pub fn parse(bytes: &[u8]) -> Result<ClientMessage, Error> {
        client(ClientView::new_checked(bytes)?)
    }
}

impl RelayMessage {
    /// Parses a relay message; a client/server type is `Error::WrongKind`.
    pub fn parse(bytes: &[u8]) -> Result<RelayMessage, Error> {
        relay(RelayView::new_checked(bytes)?)
    }
}

impl DhcpOption {
    /// Parses one whole option (header included) from `bytes`, which must hold exactly it.
    pub fn parse(bytes: &[u8]) -> Result<DhcpOption, Error> {
        let mut opts = options(OptionsIter::over(bytes))?;
        match (opts.0.pop(), opts.0.is_empty()) {
            (Some(o), true) => Ok(o),
            (None, _) => Err(Error::Truncated {
                at: 0,
                what: "option header",
                need: 4,
                have: bytes.len(),
            }),
            (Some(_), false) => Err(Error::WrongKind {
                at: 0,
                what: "more than one option where one was expected",
            }),
        }
    }
}

impl OptionView<'_> {
    /// This one option copied into the owned form (what a reader keeps of a message it
    /// otherwise reads in place, e.g. a leasequery answer's CLIENT_DATA).
    pub(crate) fn to_owned_option(self) -> Result<DhcpOption, Error> {
        option(self.kind()?)
    }
}

fn message(v: MessageView<'_>) -> Result<Message, Error> {
    Ok(match v {
        MessageView::Client(c) => Message::Client(client(c)?),
        MessageView::Relay(r) => Message::Relay(relay(r)?),
    })
}

fn client(v: ClientView<'_>) -> Result<ClientMessage, Error> {
    Ok(ClientMessage {
        msg_type: v.msg_type(),
        transaction_id: v.transaction_id(),
        options: options(v.options())?,
    })
}

fn relay(v: RelayView<'_>) -> Result<RelayMessage, Error> {
    Ok(RelayMessage {
        msg_type: v.msg_type(),
        hop_count: v.hop_count(),
        link_address: v.link_address(),
        peer_address: v.peer_address(),
        options: options(v.options())?,
    })
}

/// Every option of a list, each checked by the view before it is copied.
fn options(it: OptionsIter<'_>) -> Result<Options, Error> {
    let mut out = Vec::new();
    for o in it {
        out.push(option(o?.kind()?)?);
    }
    Ok(Options(out))
}

fn ia(v: IaView<'_>) -> Result<Ia, Error> {
    Ok(Ia {
        iaid: v.iaid,
        t1: v.t1,
        t2: v.t2,
        options: options(v.options)?,
    })
}

fn ia_addr(v: IaAddrView<'_>) -> Result<IaAddr, Error> {
    Ok(IaAddr {
        addr: v.addr,
        preferred: v.preferred,
        valid: v.valid,
        options: options(v.options)?,
    })
}

fn ia_prefix(v: IaPrefixView<'_>) -> Result<IaPrefix, Error> {
    Ok(IaPrefix {
        preferred: v.preferred,
        valid: v.valid,
        prefix_len: v.prefix_len,
        prefix_addr: v.prefix_addr,
        options: options(v.options)?,
    })
}

fn lq_query(v: LqQueryView<'_>) -> Result<LqQuery, Error> {
    Ok(LqQuery {
        query_type: v.query_type,
        link_address: v.link_address,
        options: options(v.options)?,
    })
}

/// One checked option, owned. The match is exhaustive (inside the crate `#[non_exhaustive]`
/// does not apply), so a typed option added to the view cannot be forgotten here.
fn option(o: OptionRef<'_>) -> Result<DhcpOption, Error> {
    Ok(match o {
        OptionRef::ClientId(d) => DhcpOption::ClientId(Duid::from(d)),
        OptionRef::ServerId(d) => DhcpOption::ServerId(Duid::from(d)),
        OptionRef::RelayId(d) => DhcpOption::RelayId(Duid::from(d)),
        OptionRef::IaNa(v) => DhcpOption::IaNa(ia(v)?),
        OptionRef::IaPd(v) => DhcpOption::IaPd(ia(v)?),
        OptionRef::IaTa { iaid, options: o } => DhcpOption::IaTa(IaTa {
            iaid,
            options: options(o)?,
        }),
        OptionRef::IaAddr(v) => DhcpOption::IaAddr(ia_addr(v)?),
        OptionRef::IaPrefix(v) => DhcpOption::IaPrefix(ia_prefix(v)?),
        OptionRef::Oro(v) => DhcpOption::Oro(v.codes().collect()),
        OptionRef::ElapsedTime(t) => DhcpOption::ElapsedTime(t),
        OptionRef::RelayMsg(m) => DhcpOption::RelayMsg(Box::new(message(m)?)),
        OptionRef::StatusCode(s) => DhcpOption::StatusCode(Status {
            code: s.code,
            message: s.message.to_vec(),
        }),
        OptionRef::InterfaceId(b) => DhcpOption::InterfaceId(b.to_vec()),
        OptionRef::SubscriberId(b) => DhcpOption::SubscriberId(b.to_vec()),
        OptionRef::RemoteId {
            enterprise,
            remote_id,
        } => DhcpOption::RemoteId {
            enterprise,
            remote_id: remote_id.to_vec(),
        },
        OptionRef::ClientLinklayerAddr { hw_type, addr } => DhcpOption::ClientLinklayerAddr {
            hw_type,
            addr: addr.to_vec(),
        },
        OptionRef::LqQuery(v) => DhcpOption::LqQuery(lq_query(v)?),
        OptionRef::ClientData(o) => DhcpOption::ClientData(ClientData {
            options: options(o)?,
        }),
        OptionRef::CltTime(t) => DhcpOption::CltTime(t),
        OptionRef::LqRelayData(v) => DhcpOption::LqRelayData(Box::new(LqRelayData {
            peer_address: v.peer_address,
            relay: relay(v.relay)?,
        })),
        OptionRef::LqClientLink(v) => DhcpOption::LqClientLink(v.addresses().collect()),
        OptionRef::LqBaseTime(t) => DhcpOption::LqBaseTime(t),
        OptionRef::LqStartTime(t) => DhcpOption::LqStartTime(t),
        OptionRef::LqEndTime(t) => DhcpOption::LqEndTime(t),
        OptionRef::Unknown(v) => DhcpOption::Unknown {
            code: v.code(),
            data: v.data().to_vec(),
        },
    })
}
