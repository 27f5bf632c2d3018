//! DHCPv6 options, owned: [`DhcpOption`] (one option) and [`Options`] (an ordered list).
//!
//! ```text
//! option: option-code(2) option-len(2) option-data(option-len)      (RFC 8415 §21.1)
//! ```
//! Every option listed in the module docs of [`crate::wire`] has a typed variant; any other code
//! is [`DhcpOption::Unknown`] with its exact bytes. Order is preserved, so for any message that
//! parses, `emit(parse(b)) == b`. A known option whose body breaks its layout (a 1-byte
//! STATUS_CODE, a 3-byte ELAPSED_TIME) is an error, never a panic.
//!
//! Nesting is bounded: at most [`MAX_NESTING`](super::MAX_NESTING) levels of encapsulated options in one buffer, and at
//! most [`MAX_RELAY_DEPTH`](super::MAX_RELAY_DEPTH) relay headers in one relay chain (checked in the view;
//! decoding is in `decode`).

use super::buf::Writer;
use super::codes::OptionCode;
use super::codes::StatusCode;
use super::duid::Duid;
use super::error::Error;
use super::owned::{
    ClientData, DhcpOption, Ia, IaAddr, IaPrefix, IaTa, LqQuery, LqRelayData, Message, Options,
};
use super::status::Status;
use std::net::Ipv6Addr;

impl DhcpOption {
    /// The option code on the wire.
    pub fn code(&self) -> OptionCode {
        match self {
            DhcpOption::ClientId(_) => OptionCode::CLIENTID,
            DhcpOption::ServerId(_) => OptionCode::SERVERID,
            DhcpOption::IaNa(_) => OptionCode::IA_NA,
            DhcpOption::IaTa(_) => OptionCode::IA_TA,
            DhcpOption::IaAddr(_) => OptionCode::IAADDR,
            DhcpOption::Oro(_) => OptionCode::ORO,
            DhcpOption::ElapsedTime(_) => OptionCode::ELAPSED_TIME,
            DhcpOption::RelayMsg(_) => OptionCode::RELAY_MSG,
            DhcpOption::StatusCode(_) => OptionCode::STATUS_CODE,
            DhcpOption::InterfaceId(_) => OptionCode::INTERFACE_ID,
            DhcpOption::IaPd(_) => OptionCode::IA_PD,
            DhcpOption::IaPrefix(_) => OptionCode::IAPREFIX,
            DhcpOption::RemoteId { .. } => OptionCode::REMOTE_ID,
            DhcpOption::SubscriberId(_) => OptionCode::SUBSCRIBER_ID,
            DhcpOption::ClientLinklayerAddr { .. } => OptionCode::CLIENT_LINKLAYER_ADDR,
            DhcpOption::RelayId(_) => OptionCode::RELAY_ID,
            DhcpOption::LqQuery(_) => OptionCode::LQ_QUERY,
            DhcpOption::ClientData(_) => OptionCode::CLIENT_DATA,
            DhcpOption::CltTime(_) => OptionCode::CLT_TIME,
            DhcpOption::LqRelayData(_) => OptionCode::LQ_RELAY_DATA,
            DhcpOption::LqClientLink(_) => OptionCode::LQ_CLIENT_LINK,
            DhcpOption::LqBaseTime(_) => OptionCode::LQ_BASE_TIME,
            DhcpOption::LqStartTime(_) => OptionCode::LQ_START_TIME,
            DhcpOption::LqEndTime(_) => OptionCode::LQ_END_TIME,
            DhcpOption::Unknown { code, .. } => *code,
        }
    }

    /// Length of the option body (without the 4-byte header).
    fn body_len(&self) -> usize {
        match self {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                d.buffer_len()
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => ia.body_len(),
            DhcpOption::IaTa(ia) => ia.body_len(),
            DhcpOption::IaAddr(a) => a.body_len(),
            DhcpOption::IaPrefix(p) => p.body_len(),
            DhcpOption::Oro(codes) => 2 * codes.len(),
            DhcpOption::ElapsedTime(_) => 2,
            DhcpOption::RelayMsg(m) => m.buffer_len(),
            DhcpOption::StatusCode(s) => s.body_len(),
            DhcpOption::InterfaceId(b) | DhcpOption::SubscriberId(b) => b.len(),
            DhcpOption::RemoteId { remote_id, .. } => 4 + remote_id.len(),
            DhcpOption::ClientLinklayerAddr { addr, .. } => 2 + addr.len(),
            DhcpOption::LqQuery(q) => q.body_len(),
            DhcpOption::ClientData(c) => c.options.buffer_len(),
            DhcpOption::CltTime(_)
            | DhcpOption::LqBaseTime(_)
            | DhcpOption::LqStartTime(_)
            | DhcpOption::LqEndTime(_) => 4,
            DhcpOption::LqRelayData(d) => d.body_len(),
            DhcpOption::LqClientLink(links) => 16 * links.len(),
            DhcpOption::Unknown { data, .. } => data.len(),
        }
    }

    /// Bytes on the wire, header included.
    pub fn buffer_len(&self) -> usize {
        4 + self.body_len()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        let start = w.begin_option(self.code().0)?;
        match self {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                d.emit_to(w)?
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => ia.emit_body(w)?,
            DhcpOption::IaTa(ia) => ia.emit_body(w)?,
            DhcpOption::IaAddr(a) => a.emit_body(w)?,
            DhcpOption::IaPrefix(p) => p.emit_body(w)?,
            DhcpOption::Oro(codes) => {
                for c in codes {
                    w.u16(c.0)?;
                }
            }
            DhcpOption::ElapsedTime(t) => w.u16(*t)?,
            DhcpOption::RelayMsg(m) => m.emit_to(w)?,
            DhcpOption::StatusCode(s) => s.emit_body(w)?,
            DhcpOption::InterfaceId(b) | DhcpOption::SubscriberId(b) => w.put(b)?,
            DhcpOption::RemoteId {
                enterprise,
                remote_id,
            } => {
                w.u32(*enterprise)?;
                w.put(remote_id)?;
            }
            DhcpOption::ClientLinklayerAddr { hw_type, addr } => {
                w.u16(*hw_type)?;
                w.put(addr)?;
            }
            DhcpOption::LqQuery(q) => q.emit_body(w)?,
            DhcpOption::ClientData(c) => c.options.emit_to(w)?,
            DhcpOption::CltTime(t)
            | DhcpOption::LqBaseTime(t)
            | DhcpOption::LqStartTime(t)
            | DhcpOption::LqEndTime(t) => w.u32(*t)?,
            DhcpOption::LqRelayData(d) => d.emit_body(w)?,
            DhcpOption::LqClientLink(links) => {
                for l in links {
                    w.addr(l)?;
                }
            }
            DhcpOption::Unknown { data, .. } => w.put(data)?,
        }
        w.end_option(start)
    }

    /// Writes the option into `buf` (at least `buffer_len()` bytes); returns bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.pos())
    }
}

macro_rules! finder {
    ($(#[$m:meta])* $name:ident, $variant:ident, $ty:ty) => {
        $(#[$m])*
        pub fn $name(&self) -> Option<$ty> {
            self.0.iter().find_map(|o| match o {
                DhcpOption::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl Options {
    pub fn new() -> Self {
        Options(Vec::new())
    }

    /// Bytes on the wire for all the options.
    pub fn buffer_len(&self) -> usize {
        self.0.iter().map(DhcpOption::buffer_len).sum()
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        for o in &self.0 {
            o.emit_to(w)?;
        }
        Ok(())
    }

    /// The first option with `code`.
    pub fn find(&self, code: OptionCode) -> Option<&DhcpOption> {
        self.0.iter().find(|o| o.code() == code)
    }

    finder!(/// CLIENTID.
        client_id, ClientId, &Duid);
    finder!(/// SERVERID.
        server_id, ServerId, &Duid);
    finder!(/// RELAY_ID.
        relay_id, RelayId, &Duid);
    finder!(/// STATUS_CODE.
        status, StatusCode, &Status);
    finder!(/// LQ_QUERY.
        lq_query, LqQuery, &LqQuery);
    finder!(/// CLIENT_DATA (the first; bulk replies carry one per message).
        client_data, ClientData, &ClientData);
    finder!(/// INTERFACE_ID.
        interface_id_bytes, InterfaceId, &Vec<u8>);
    finder!(/// ORO.
        oro, Oro, &Vec<OptionCode>);

    /// The status code, `None` when no STATUS_CODE is present (which RFC 8415 §21.13 reads as
    /// Success).
    pub fn status_code(&self) -> Option<StatusCode> {
        self.status().map(|s| s.code)
    }

    /// INTERFACE_ID as a slice.
    pub fn interface_id(&self) -> Option<&[u8]> {
        self.interface_id_bytes().map(Vec::as_slice)
    }

    /// The message inside RELAY_MSG.
    pub fn relay_msg(&self) -> Option<&Message> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::RelayMsg(m) => Some(&**m),
            _ => None,
        })
    }

    /// LQ_RELAY_DATA.
    pub fn lq_relay_data(&self) -> Option<&LqRelayData> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::LqRelayData(d) => Some(&**d),
            _ => None,
        })
    }

    /// LQ_CLIENT_LINK addresses.
    pub fn lq_client_link(&self) -> Option<&[Ipv6Addr]> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::LqClientLink(l) => Some(l.as_slice()),
            _ => None,
        })
    }

    /// REMOTE_ID as (enterprise-number, remote-id).
    pub fn remote_id(&self) -> Option<(u32, &[u8])> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::RemoteId {
                enterprise,
                remote_id,
            } => Some((*enterprise, remote_id.as_slice())),
            _ => None,
        })
    }

    fn u32_of(&self, code: OptionCode) -> Option<u32> {
        self.0.iter().find_map(|o| match (o, o.code() == code) {
            (
                DhcpOption::CltTime(t)
                | DhcpOption::LqBaseTime(t)
                | DhcpOption::LqStartTime(t)
                | DhcpOption::LqEndTime(t),
                true,
            ) => Some(*t),
            _ => None,
        })
    }

    /// CLT_TIME.
    pub fn clt_time(&self) -> Option<u32> {
        self.u32_of(OptionCode::CLT_TIME)
    }

    /// LQ_BASE_TIME.
    pub fn lq_base_time(&self) -> Option<u32> {
        self.u32_of(OptionCode::LQ_BASE_TIME)
    }

    /// The server reply sequence number carried in option `code` (a local extension after the
    /// expired draft-ietf-dhc-dhcpv6-srsn-option, which never got an IANA code): a 4-byte
    /// unsigned counter at the top level of the message. `None` when absent or not 4 bytes.
    pub fn srsn(&self, code: u16) -> Option<u32> {
        self.iter().find_map(|o| match o {
            DhcpOption::Unknown { code: c, data } if c.0 == code => {
                <[u8; 4]>::try_from(data.as_slice())
                    .ok()
                    .map(u32::from_be_bytes)
            }
            _ => None,
        })
    }

    /// ELAPSED_TIME.
    pub fn elapsed_time(&self) -> Option<u16> {
        self.0.iter().find_map(|o| match o {
            DhcpOption::ElapsedTime(t) => Some(*t),
            _ => None,
        })
    }

    /// IA_NA options, in order.
    pub fn ia_nas(&self) -> impl Iterator<Item = &Ia> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaNa(ia) => Some(ia),
            _ => None,
        })
    }

    /// IA_PD options, in order.
    pub fn ia_pds(&self) -> impl Iterator<Item = &Ia> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaPd(ia) => Some(ia),
            _ => None,
        })
    }

    /// IA_TA options, in order.
    pub fn ia_tas(&self) -> impl Iterator<Item = &IaTa> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaTa(ia) => Some(ia),
            _ => None,
        })
    }

    /// IAADDR options directly in this list (not inside IAs).
    pub fn ia_addrs(&self) -> impl Iterator<Item = &IaAddr> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaAddr(a) => Some(a),
            _ => None,
        })
    }

    /// IAPREFIX options directly in this list (not inside IAs).
    pub fn ia_prefixes(&self) -> impl Iterator<Item = &IaPrefix> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::IaPrefix(p) => Some(p),
            _ => None,
        })
    }

    /// Every CLIENT_DATA, in order.
    pub fn client_datas(&self) -> impl Iterator<Item = &ClientData> {
        self.0.iter().filter_map(|o| match o {
            DhcpOption::ClientData(c) => Some(c),
            _ => None,
        })
    }
}
