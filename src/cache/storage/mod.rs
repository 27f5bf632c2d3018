//! The cache's storage engine: where leases live in memory, and nothing about what they mean.
//!
//! The merge rules in the parent module decide *what* is true; this module only keeps it, fast
//! and compact. What it guarantees to the store above it:
//!
//! - `LeaseTable` maps a [`LeaseKey`](super::LeaseKey) to its [`Lease`](super::Lease); lookups
//!   run concurrently on every core (one shard read lock for one probe), writes come from one
//!   writer at a time, and an update replaces a lease in place, so a reader never sees a held key
//!   missing.
//! - A lease stays at one `SlotRef` until it is removed, so other indexes (expiry heap,
//!   by-client, by-link) hold 4-byte slot numbers instead of keys; a freed slot may be reused, and
//!   holders re-check what they find there.
//! - Memory grows with the leases held, in chunks (huge pages once large, see `hugemem`), and
//!   index probe runs do not degrade with churn (backward-shift deletion, no tombstones).
//! - Keys are hashed with a per-process random seed ([`hash`]), since they come from the network.
//!
//! Inside: `table` (the sharded map), `slab` (stable-numbered entries), `tagindex` (the open
//! addressing index of hash tags to slots), `hugemem` (the arrays behind both: the only `unsafe`
//! in the cache), [`hash`], and `incmap` (a hash map that grows a few buckets per write, for the
//! store's and the route book's indexes on the snooped path).

pub(crate) mod hash;
mod hugemem;
mod incmap;
mod slab;
mod table;
mod tagindex;

pub(crate) use hash::KeyHashBuilder;
pub(crate) use incmap::{IncMap, ShardedMap, StaggeredMap};
pub(crate) use table::{LeaseTable, Line, Probe, SlotRef};
