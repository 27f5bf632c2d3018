#!/usr/bin/env bash
# The one test command: installs what the tests need on a fresh Debian machine, then runs
# formatting, lints, every test target and a short smoke run of every fuzz target.
# Run it as root: the namespace, netlink and ISC interop tests need it (under CI=true they fail
# loudly without it, never skip).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n=== %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "tests/run.sh: must run as root under CI=true" >&2
    exit 1
  fi
  echo "WARNING: not root: privileged tests will be skipped with a SKIP line" >&2
  SUDO=sudo
else
  SUDO=
fi

log "system packages"
# make: builds jemalloc, the agent's allocator (tikv-jemallocator in Cargo.toml).
PKGS=(make iproute2 nftables isc-dhcp-server isc-dhcp-relay isc-dhcp-client tshark tcpdump jq procps iputils-ping util-linux prometheus frr systemd systemd-container debootstrap)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

log "cargo-fuzz"
if [ -d fuzz ] && ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi

log "cargo-deb"
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --all-targets

if [ -d fuzz ]; then
  log "fuzz smoke run"
  secs="${FUZZ_SMOKE_SECS:-20}"
  # cargo-fuzz needs nightly-only flags (sanitizers, sancov); RUSTC_BOOTSTRAP lets the
  # machine's one stable toolchain accept them.
  for target in $(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048)
  done
fi

log "all checks passed"
