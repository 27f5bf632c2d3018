//! Shared test support. Each integration test file does `mod support;` and uses what it needs.
#![allow(dead_code, unreachable_pub)]

pub mod agent;
pub mod flood;
pub mod isc;
pub mod netns;
pub mod scrape;
pub mod tmpfs;
