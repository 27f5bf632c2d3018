//! Unit tests for the codec against fixed bytes (style.md habit 4).

mod messages;
mod options;
mod pretty;
