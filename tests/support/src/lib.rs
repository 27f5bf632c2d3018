//! Shared test support, one crate for every integration-test binary (`tests/unit_like`,
//! `tests/loopback`, `tests/netns`) and the benches: they depend on it as `support`
//! (a dev-dependency), so each helper is compiled once and is public API here, not dead code
//! in a test binary that happens not to use it.

pub mod agent;
pub mod bin;
pub mod captures;
pub mod closed;
pub mod flood;
pub mod isc;
pub mod ldra;
pub mod netns;
pub mod recovery;
pub mod refserver;
pub mod scrape;
pub mod storm;
pub mod tasks;
pub mod tmpfs;
pub mod wait;
