//! The operator's configuration: TOML file shape turned into a validated `Config`.
