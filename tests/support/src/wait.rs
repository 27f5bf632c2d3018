//! Waiting for a condition with a bound instead of sleeping for a guessed time: the blocking
//! [`wait_for`], and [`wait_for_async`] for async tests (inside a current-thread
//! `#[tokio::test]` the blocking one would stall the very tasks the condition waits for).

use std::time::{Duration, Instant};

/// Poll `f` every 50 ms until it is true or `timeout` passes (then panic naming `what`).
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `f` every 10 ms, yielding to the runtime, until it is true or `timeout` passes (then
/// panic naming `what`).
pub async fn wait_for_async(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
