//! The binding cache: what is true about which subscriber holds which address and prefix.
//!
//! Inputs are [`Observation`]s (from the snooper, the requestor, bulk leasequery and the state
//! file) and [`Withdrawal`]s (released/declined leases, operator `clear`). The pure merge rules in
//! [`merge`] decide what is true (RFC 5007 §4.3.4 plus our documented extensions); the
//! [`store::BindingStore`] holds the result in concurrent indexes, on the lease table of the
//! [`storage`] engine; [`expiry`] removes what lapses;
//! [`crate::cache_task`] is the tokio shell that serialises writes and emits an ordered, bounded
//! [`Change`] stream for the route installer (a layer up: it also journals through
//! [`crate::persist`] and admits through [`crate::admission`], which both build on this
//! module's types); [`crate::persist`] keeps a crash-safe state file.

pub(crate) mod binding;
pub(crate) mod expiry;
pub mod from_wire;
pub mod merge;
pub(crate) mod storage;
pub(crate) mod store;

pub use binding::{
    AccessPort, Change, ChangeKind, ClientInfo, Confirmation, Doubt, DoubtOutcome, DoubtReason,
    DoubtStats, IaType, Lease, LeaseKey, Link, Observation, ObservedLease, RelayData, RouteView,
    ServerId, Source, Sweep, Timestamp, WithdrawReason, Withdrawal,
};
pub use merge::{Cap, CltCheck, MergeConfig, MergeVerdict};
pub use store::{Applied, BindingStore, CacheConfig, CacheStats, MoveKind};

pub use crate::time::AgentClock;
