//! Protocol numbers: message types, option codes, status codes and leasequery query types.
//!
//! One form for all four: a transparent newtype over the wire integer with
//! named constants, so an unknown value is just another value and round-trips byte for byte.
//! `name()` gives the RFC name of a known value (for logs and `lqagent decode`).

use std::fmt;

use crate::label::labels;

macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        $name:ident($int:ty) {
            $( $(#[$cmeta:meta])* $konst:ident = $value:expr, $label:expr; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $int);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: $name = $name($value); )*

            /// Every value with a name, in numeric order.
            pub const KNOWN: &'static [$name] = &[$($name($value)),*];

            /// The RFC name of a known value, `None` for any other.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($label), )*
                    _ => None,
                }
            }

            /// The value on the wire.
            pub fn value(self) -> $int {
                self.0
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $int {
            fn from(v: $name) -> Self {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{n}({})", self.0),
                    None => write!(f, "unknown({})", self.0),
                }
            }
        }
    };
}

wire_code! {
    /// DHCPv6 message type (RFC 8415 §7.3, RFC 5007 §4.1, RFC 5460 §5.2, RFC 7653 §5.2).
    MessageType(u8) {
        SOLICIT = 1, "SOLICIT";
        ADVERTISE = 2, "ADVERTISE";
        REQUEST = 3, "REQUEST";
        CONFIRM = 4, "CONFIRM";
        RENEW = 5, "RENEW";
        REBIND = 6, "REBIND";
        REPLY = 7, "REPLY";
        RELEASE = 8, "RELEASE";
        DECLINE = 9, "DECLINE";
        RECONFIGURE = 10, "RECONFIGURE";
        INFORMATION_REQUEST = 11, "INFORMATION-REQUEST";
        RELAY_FORW = 12, "RELAY-FORW";
        RELAY_REPL = 13, "RELAY-REPL";
        LEASEQUERY = 14, "LEASEQUERY";
        LEASEQUERY_REPLY = 15, "LEASEQUERY-REPLY";
        LEASEQUERY_DONE = 16, "LEASEQUERY-DONE";
        LEASEQUERY_DATA = 17, "LEASEQUERY-DATA";
        ACTIVELEASEQUERY = 22, "ACTIVELEASEQUERY";
        STARTTLS = 23, "STARTTLS";
    }
}

impl MessageType {
    /// RELAY-FORW and RELAY-REPL use the relay layout (RFC 8415 §9); every other type,
    /// known or not, uses the client/server layout (§8).
    pub fn is_relay(self) -> bool {
        self == MessageType::RELAY_FORW || self == MessageType::RELAY_REPL
    }
}

wire_code! {
    /// DHCPv6 option code (RFC 8415 §21, RFC 5007 §4.1.2, RFC 5460 §5.4, RFC 7653 §5.3, ...).
    OptionCode(u16) {
        CLIENTID = 1, "CLIENTID";
        SERVERID = 2, "SERVERID";
        IA_NA = 3, "IA_NA";
        IA_TA = 4, "IA_TA";
        IAADDR = 5, "IAADDR";
        ORO = 6, "ORO";
        PREFERENCE = 7, "PREFERENCE";
        ELAPSED_TIME = 8, "ELAPSED_TIME";
        RELAY_MSG = 9, "RELAY_MSG";
        AUTH = 11, "AUTH";
        UNICAST = 12, "UNICAST";
        STATUS_CODE = 13, "STATUS_CODE";
        RAPID_COMMIT = 14, "RAPID_COMMIT";
        USER_CLASS = 15, "USER_CLASS";
        VENDOR_CLASS = 16, "VENDOR_CLASS";
        VENDOR_OPTS = 17, "VENDOR_OPTS";
        INTERFACE_ID = 18, "INTERFACE_ID";
        RECONF_MSG = 19, "RECONF_MSG";
        RECONF_ACCEPT = 20, "RECONF_ACCEPT";
        DNS_SERVERS = 23, "DNS_SERVERS";
        DOMAIN_LIST = 24, "DOMAIN_LIST";
        IA_PD = 25, "IA_PD";
        IAPREFIX = 26, "IAPREFIX";
        REMOTE_ID = 37, "REMOTE_ID";
        SUBSCRIBER_ID = 38, "SUBSCRIBER_ID";
        CLIENT_FQDN = 39, "CLIENT_FQDN";
        LQ_QUERY = 44, "LQ_QUERY";
        CLIENT_DATA = 45, "CLIENT_DATA";
        CLT_TIME = 46, "CLT_TIME";
        LQ_RELAY_DATA = 47, "LQ_RELAY_DATA";
        LQ_CLIENT_LINK = 48, "LQ_CLIENT_LINK";
        RELAY_ID = 53, "RELAY_ID";
        CLIENT_LINKLAYER_ADDR = 79, "CLIENT_LINKLAYER_ADDR";
        LQ_BASE_TIME = 100, "LQ_BASE_TIME";
        LQ_START_TIME = 101, "LQ_START_TIME";
        LQ_END_TIME = 102, "LQ_END_TIME";
    }
}

wire_code! {
    /// Status code carried in OPTION_STATUS_CODE (RFC 8415 §21.13, RFC 5007 §4.1.2.7,
    /// RFC 5460 §5.5, RFC 7653 §5.4).
    StatusCode(u16) {
        SUCCESS = 0, "Success";
        UNSPEC_FAIL = 1, "UnspecFail";
        NO_ADDRS_AVAIL = 2, "NoAddrsAvail";
        NO_BINDING = 3, "NoBinding";
        NOT_ON_LINK = 4, "NotOnLink";
        USE_MULTICAST = 5, "UseMulticast";
        NO_PREFIX_AVAIL = 6, "NoPrefixAvail";
        UNKNOWN_QUERY_TYPE = 7, "UnknownQueryType";
        MALFORMED_QUERY = 8, "MalformedQuery";
        NOT_CONFIGURED = 9, "NotConfigured";
        NOT_ALLOWED = 10, "NotAllowed";
        QUERY_TERMINATED = 11, "QueryTerminated";
        DATA_MISSING = 12, "DataMissing";
        CATCH_UP_COMPLETE = 13, "CatchUpComplete";
        NOT_SUPPORTED = 14, "NotSupported";
        TLS_CONNECTION_REFUSED = 15, "TLSConnectionRefused";
    }
}

wire_code! {
    /// Leasequery query type in OPTION_LQ_QUERY (RFC 5007 §4.1.2.1, RFC 5460 §5.3).
    QueryType(u8) {
        BY_ADDRESS = 1, "QUERY_BY_ADDRESS";
        BY_CLIENTID = 2, "QUERY_BY_CLIENTID";
        BY_RELAY_ID = 3, "QUERY_BY_RELAY_ID";
        BY_LINK_ADDRESS = 4, "QUERY_BY_LINK_ADDRESS";
        BY_REMOTE_ID = 5, "QUERY_BY_REMOTE_ID";
    }
}

labels! {
    /// The leasequery types the agent asks, by one name everywhere: the `query_type` metric label,
    /// log fields and `bulk.queries` in the configuration (which also takes the older spelling
    /// with a hyphen, `relay-id`, that configurations in the field use). [`QueryType`] is the
    /// wire byte, any value a peer may send; [`LeasequeryType::code`] is this type's byte.
    pub enum LeasequeryType {
        /// QUERY_BY_ADDRESS (RFC 5007 §4.1.2.1).
        Address => "address",
        /// QUERY_BY_CLIENTID (RFC 5007 §4.1.2.1).
        ClientId => "client_id",
        /// QUERY_BY_RELAY_ID (RFC 5460 §5.3).
        RelayId => "relay_id",
        /// QUERY_BY_LINK_ADDRESS (RFC 5460 §5.3).
        LinkAddress => "link_address",
        /// QUERY_BY_REMOTE_ID (RFC 5460 §5.3).
        RemoteId => "remote_id",
    }
}

impl LeasequeryType {
    /// The query-type byte of OPTION_LQ_QUERY.
    pub const fn code(self) -> QueryType {
        match self {
            LeasequeryType::Address => QueryType::BY_ADDRESS,
            LeasequeryType::ClientId => QueryType::BY_CLIENTID,
            LeasequeryType::RelayId => QueryType::BY_RELAY_ID,
            LeasequeryType::LinkAddress => QueryType::BY_LINK_ADDRESS,
            LeasequeryType::RemoteId => QueryType::BY_REMOTE_ID,
        }
    }
}
