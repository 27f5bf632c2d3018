//! `lqagent check-config [--config FILE]`: validate the file and print the effective
//! configuration (every default filled in) as TOML; on error, exit non-zero with the message
//! that names the key.

use std::path::Path;

use lqagent::config::Config;

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| match e {
        // The read error already names the file.
        e @ lqagent::config::ConfigError::Read { .. } => anyhow::anyhow!("{e}"),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    print!(
        "# effective configuration of {}\n{}",
        path.display(),
        config.to_toml()
    );
    Ok(())
}
