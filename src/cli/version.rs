//! `lqagent version`.

pub(crate) fn run() -> anyhow::Result<()> {
    println!(
        "lqagent {} (rtnetlink 0.24.0, netlink-packet-route 0.34.0)",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}
