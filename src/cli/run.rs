//! `lqagent run [--config FILE]`: the daemon. Everything is in `lqagent::daemon`; this is the
//! anyhow edge that prints why it could not start.

use std::path::Path;

use anyhow::Context;

pub(crate) fn run(config: &Path) -> anyhow::Result<()> {
    lqagent::daemon::run(config)
        .with_context(|| format!("lqagent run --config {}", config.display()))
}
