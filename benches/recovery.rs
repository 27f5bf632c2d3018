//! `cargo bench --bench recovery` (root): reboot recovery time.
//!
//! The reference server holds N bindings (mixed IA_NA and PD over several links); lqagent's
//! bulk requestor streams them into the cache and the route installer. Measured: from the
//! start of recovery to the last route in the kernel (bulk), and the same from the state file
//! alone. Last line: `recovery: <n> bindings bulk <s> s, state-file <s> s`.
//!
//! Without `--bench` in argv (as under `cargo test --all-targets`) it does a tiny smoke run.

use support::recovery as recovery_support;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 500 };
    if !support::netns::require_root("bench recovery") {
        return;
    }
    let r = recovery_support::measure(n);
    println!(
        "recovery: {} bindings bulk {:.3} s, state-file {:.3} s",
        r.bindings,
        r.bulk.as_secs_f64(),
        r.state_file.as_secs_f64()
    );
}
