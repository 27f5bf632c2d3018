//! Integration tests that need neither root nor the network: the wire codec against vectors and
//! round trips, the merge table, the store indexes, the module rules, the CLI (`decode`,
//! `check-config`), crash-safe state files and the deploy files. Fast; run anywhere.

mod architecture;
mod cli_check_config;
mod cli_decode;
mod deploy_files;
mod deploy_monitoring;
mod kea_captures;
mod merge_table;
mod ownership_model;
mod state_crash;
mod store_indexes;
mod wire_roundtrip;
mod wire_vectors;
