//! Integration tests that need root and the system: network namespaces the tests create, real
//! netlink and nftables, ISC dhcpd/dhcrelay/dhclient, FRR, tshark, the Debian package (also
//! installed and run under systemd in a booted container), and the
//! daemon end to end. Under CI=true a missing privilege or tool fails the test, never skips it.

mod bulk_flap;
mod bulk_recovery;
mod caps;
mod daemon_attacks;
mod daemon_drift;
mod daemon_e2e;
mod daemon_failsafe;
mod daemon_inherited;
mod daemon_recovery;
mod daemon_trigger_e2e;
mod deb_package;
mod frr_bgp;
mod isc_lab;
mod kernel_kill9;
mod kernel_netns;
mod ldra;
mod netns_support;
mod ownership;
mod requestor_isc;
mod server_profiles;
mod snoop_capture;
mod snoop_pipeline;
mod snoop_trigger;
mod state_full_disk;
mod state_start;
mod systemd_unit;
mod tshark_check;
mod unreachable_netns;
