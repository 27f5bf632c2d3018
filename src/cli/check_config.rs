//! `lqagent check-config [--config FILE] [--quiet]`: validate the file, check it against this
//! host (route protocol numbers other daemons use, a writable state directory), and print the
//! effective configuration (every default filled in) as TOML; on error, print the message that
//! names the key on stderr and exit with status 1. `--quiet` prints nothing on success: the
//! systemd unit runs the check before every start, and its stdout is the journal, which would
//! otherwise get the whole configuration at each (re)start.

use std::path::Path;

use lqagent::config::{Config, ConfigError};

pub(crate) fn run(path: &Path, quiet: bool) -> anyhow::Result<()> {
    match Config::load(path).and_then(|c| c.check_host().map(|()| c)) {
        Ok(_) if quiet => Ok(()),
        Ok(config) => {
            print!(
                "# effective configuration of {}\n{}",
                path.display(),
                config.to_toml()
            );
            Ok(())
        }
        Err(e) => {
            match e {
                // The read error already names the file.
                e @ ConfigError::Read { .. } => eprintln!("lqagent check-config: {e}"),
                e => eprintln!("lqagent check-config: {}: {e}", path.display()),
            }
            std::process::exit(1)
        }
    }
}
