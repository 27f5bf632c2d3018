//! lqagent — a DHCPv6 leasequery requestor and binding-cache agent for access concentrators.
//!
//! The agent runs beside a DHCPv6 relay on a CMTS or BNG. It learns which subscriber holds which
//! IPv6 address and delegated prefix (by snooping relayed replies, by asking servers with RFC 5007
//! leasequery when unknown traffic shows up, and by RFC 5460 bulk leasequery after a reboot),
//! merges what several servers say into one cache, and keeps the kernel's routes in step with it.
//!
//! Architecture: protocol logic lives in pure, sans-IO cores that are fed bytes and time and
//! return actions; thin tokio shells own the sockets. Module map (each one sentence):
//!
//! - [`wire`] turns bytes into values and back.
//! - [`requestor`] decides what to ask and when (UDP leasequery).
//! - [`bulk`] does the same over TCP (bulk leasequery).
//! - [`admission`] decides what may be believed: every binding passes it before the cache.
//! - [`cache`] decides what is true (the binding model, the merge rules and the store).
//! - [`cache_task`] is the cache's tokio shell: it serialises the writes, journals them and
//!   hands the changes to the route installer.
//! - [`persist`] keeps the cache's bindings across restarts (the state file).
//! - [`kernel`] makes the kernel agree with the cache.
//! - [`snoop`] notices relayed DHCPv6 traffic.
//! - [`trigger`] notices traffic from sources the cache does not know (nftables + NFLOG).
//! - [`control`] answers the operator.
//! - [`config`] says what the operator wants.
//! - [`metrics`] says what happened.
//! - [`daemon`] connects them.
//! - [`supervise`] restarts a failed long-running task (every layer's shells use it).
//! - [`pcap`] reads and writes capture files (`lqagent decode --pcap`, tests).
//! - `bpf` is classic BPF as data, the language of the two socket filters (`snoop`'s and the
//!   `requestor`'s).
//! - `label` is the one way an enum becomes a label (metrics, logs, control output).
//! - [`time`] is the one agent clock (and the retry backoff) every module uses.
//! - `logging` sets up how the agent speaks; `notify` tells systemd how it is (both crate-private:
//!   only the daemon uses them).
//!
//! Public surface: the top-level modules above are public because the binary (`src/main.rs`
//! and its `cli`), the integration tests, the benches, the fuzz targets and the reference server
//! in the test-support crate drive them (`logging` and `notify` only the daemon does: they are
//! crate-private). Inside each module only what those users name is public, plus the types that
//! appear in those items' signatures; the few submodules they import by path stay public
//! (`wire::bulk`, `wire::pretty`, `persist`, `cache_task`, `requestor::udp`,
//! `trigger::nflog`, ...); a submodule nobody outside names is `pub(crate)` and its folder
//! re-exports what others use (`cache::store`, `cache::storage`, `persist::codec`,
//! `persist::writer`, `snoop::bpf`, `control::slots`). Everything else is `pub(crate)`, so
//! `unreachable_pub` (on in `Cargo.toml`'s `[lints]`) and the dead-code lints can see what
//! nothing uses. Making an item public is a decision about who needs it, not a default.
//!
//! Unsafe code is denied crate-wide (`unsafe_code = "deny"` in `Cargo.toml`) and allowed, block by
//! block with a `SAFETY:` note, only for system calls the socket crates do not wrap:
//! `snoop::capture` (AF_PACKET socket, BPF filter, bind), `kernel::netlink` (socket options on the
//! rtnetlink socket) and `requestor::pktinfo` (IPV6_RECVPKTINFO and `recvmsg` for the arrival
//! interface); `persist::writer` (`flock` on the state directory's lock file); and `cache::storage::hugemem`, whose lease-table arrays are its own allocation (layout,
//! `madvise(MADV_HUGEPAGE)`, initialisation and drop) so that they sit in huge pages, and whose
//! `prefetch` asks the CPU for a lookup's index lines ahead of its probes.

pub mod admission;
pub(crate) mod bpf;
pub mod bulk;
pub mod cache;
pub mod cache_task;
pub mod config;
pub mod control;
pub mod daemon;
pub mod kernel;
pub(crate) mod label;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod notify;
pub mod pcap;
pub mod persist;
pub mod prefix;
pub mod requestor;
pub mod snoop;
pub mod supervise;
pub mod time;
pub mod trigger;
pub mod wire;
