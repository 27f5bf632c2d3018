//! Waiting for a condition with a bound, from async tests. (The blocking form is
//! [`crate::isc::wait_for`]; inside a current-thread `#[tokio::test]` it would stall the very
//! tasks the condition waits for.)

use std::time::{Duration, Instant};

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
