//! One file per subcommand; each exposes `run(args) -> anyhow::Result<...>`.

pub(crate) mod check_config;
pub(crate) mod control;
pub(crate) mod decode;
pub(crate) mod generate;
pub(crate) mod query;
pub(crate) mod run;
pub(crate) mod version;
