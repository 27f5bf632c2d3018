//! Unit tests for the codec against fixed bytes: construct, emit, parse, deconstruct.

mod checked;
mod lease_scan;
mod messages;
mod options;
mod pretty;
