//! One file per subcommand; each exposes `run(args) -> anyhow::Result<...>`.

pub(crate) mod version;
