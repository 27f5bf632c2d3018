#!/usr/bin/env bash
# Re-captures the golden vectors in tests/data/ from real ISC software (see README.md there).
#
#   cap-srv: dhcpd -6     s0 2001:db8::1/64 ── up0 2001:db8::2/64    cap-ac: dhcrelay -6 -I
#                                               sub0 2001:db8:1::1/64 ── c0   cap-cli: dhclient -6 -N -P
#
# tcpdump in the access-concentrator namespace writes three captures:
#   client-relay.pcap   on sub0 (Ethernet): the client's SOLICIT..REPLY, RENEW, RELEASE, relay's answers
#   relay-server.pcap   on up0 (Ethernet): the same exchanges as RELAY-FORW / RELAY-REPL
#   leasequery.pcap     on "any" (Linux cooked v2): LEASEQUERY / LEASEQUERY-REPLY between the
#                       access concentrator (our `lqagent query`, port 546) and dhcpd
# and the ISC lease files are saved beside them (isc-dhclient6.leases, isc-dhcpd6.leases) so the
# tests can check our reading against what ISC itself wrote down.
#
# Run as root from anywhere: `sudo tests/data/capture.sh` (LQAGENT=/path/to/lqagent skips the
# build; OUT=dir writes elsewhere). Needs isc-dhcp-server, isc-dhcp-relay, isc-dhcp-client,
# tcpdump, iproute2. The MAC addresses are fixed so DUID-LL values repeat; DUID-LLT times, lease
# addresses and transaction ids differ on every run, so after a re-capture the expected values in
# tests/unit_like/wire_vectors.rs must be updated (the README says how to list them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here}"
[ "$(id -u)" = 0 ] || { echo "capture.sh: run as root (network namespaces)" >&2; exit 1; }

if [ -z "${LQAGENT:-}" ]; then
  (cd "$here/../.." && cargo build --quiet --bin lqagent)
  LQAGENT="$(cd "$here/../.." && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/lqagent"
fi

tag="cap$$"
SRV="$tag-srv" AC="$tag-ac" CLI="$tag-cli"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "$SRV" "$AC" "$CLI"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mkns() {
  ip netns add "$1"
  nsx "$1" ip link set lo up
  nsx "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}
# Daemons are started with `ip netns exec` (not nsx) so that $! is the daemon itself.
# Wait up to $1 seconds for the command after it to succeed.
wait_until() {
  local t=$1; shift
  for _ in $(seq $((t * 10))); do "$@" && return 0; sleep 0.1; done
  echo "capture.sh: timed out: $*" >&2
  for f in "$work"/*.log; do echo "--- $f"; cat "$f"; done >&2
  return 1
}

mkns "$SRV"; mkns "$AC"; mkns "$CLI"
ip link add s0 netns "$SRV" address 02:00:00:00:01:01 type veth \
  peer name up0 netns "$AC" address 02:00:00:00:02:01
ip link add sub0 netns "$AC" address 02:00:00:00:02:02 type veth \
  peer name c0 netns "$CLI" address 02:00:00:00:03:01
nsx "$SRV" ip -6 addr add 2001:db8::1/64 dev s0 nodad
nsx "$AC" ip -6 addr add 2001:db8::2/64 dev up0 nodad
nsx "$AC" ip -6 addr add 2001:db8:1::1/64 dev sub0 nodad
nsx "$SRV" ip link set s0 up
nsx "$AC" ip link set up0 up
nsx "$AC" ip link set sub0 up
nsx "$CLI" ip link set c0 up
nsx "$AC" sysctl -qw net.ipv6.conf.all.forwarding=1
nsx "$SRV" ip -6 route add 2001:db8:1::/64 via 2001:db8::2

# T1 of 4 s: dhclient renews within seconds (dhcpd puts dhcp-renewal-time and
# dhcp-rebinding-time in IA_NA/IA_PD T1 and T2).
cat >"$work/dhcpd6.conf" <<'EOF'
default-lease-time 600;
preferred-lifetime 300;
option dhcp-renewal-time 4;
option dhcp-rebinding-time 6;
max-lease-time 7200;
allow leasequery;
subnet6 2001:db8::/64 { }
subnet6 2001:db8:1::/64 {
  range6 2001:db8:1::100 2001:db8:1::1ff;
  prefix6 2001:db8:100:: 2001:db8:1ff:: /56;
}
EOF
: >"$work/dhcpd6.leases"
ip netns exec "$SRV" dhcpd -6 -f -d -cf "$work/dhcpd6.conf" -lf "$work/dhcpd6.leases" \
  -pf "$work/dhcpd.pid" s0 >"$work/dhcpd.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q "Server starting" "$work/dhcpd.log"

ip netns exec "$AC" dhcrelay -6 -d -I -pf "$work/dhcrelay.pid" -l sub0 -u 2001:db8::1%up0 \
  >"$work/dhcrelay.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q "Sending on" "$work/dhcrelay.log"

capture() {  # name interface filter
  ip netns exec "$AC" tcpdump -Z root -U -n -i "$2" -w "$work/$1.pcap" "$3" \
    >"$work/tcpdump-$1.log" 2>&1 &
  pids+=($!)
  wait_until 10 grep -q "listening on" "$work/tcpdump-$1.log"
}
capture client-relay sub0 "udp port 546 or udp port 547"
capture relay-server up0 "udp port 547 and not udp port 546"
capture leasequery any "udp port 546 and host 2001:db8::1"

# SOLICIT, ADVERTISE, REQUEST, REPLY; then RENEW, REPLY at T1.
ip netns exec "$CLI" dhclient -6 -N -P -d -sf /bin/true -lf "$work/dhclient6.leases" \
  -pf "$work/dhclient.pid" c0 >"$work/dhclient.log" 2>&1 &
dhclient_pid=$!
pids+=("$dhclient_pid")
bound() { grep -q iaaddr "$work/dhclient6.leases" 2>/dev/null && grep -q iaprefix "$work/dhclient6.leases"; }
wait_until 30 bound
renewed() { [ "$(grep -c 'lease6 {' "$work/dhclient6.leases")" -ge 2 ]; }
wait_until 30 renewed

field() { grep "$1" "$work/dhclient6.leases" | tail -1 | awk '{print $2}'; }
address="$(field iaaddr)"
prefix="$(field iaprefix)"
# dhclient writes the DUID as colon-separated octets without leading zeros.
duid="$(grep 'dhcp6.client-id' "$work/dhclient6.leases" | tail -1 | awk '{print $3}' | tr -d ';' |
  tr ':' '\n' | while read -r o; do printf '%02x' "0x$o"; done)"
inside_prefix="${prefix%/*}1"
echo "bound: address $address prefix $prefix client-id $duid"

# Leasequeries from the access concentrator (our encoder; dhcpd answers to port 546).
query() {
  echo "+ lqagent query $*"
  nsx "$AC" "$LQAGENT" query --server 2001:db8::1 --interface up0 --attempts 1 --timeout 2 "$@" || true
}
query --address "$address" --relay-data
query --address "$address" --link 2001:db8:1::1
query --client-id "$duid"
query --address "$inside_prefix"
query --address 2001:db8:1::1ff
query --address 2001:db8:1::100 --link 2001:db8:99::1

# RELEASE, REPLY.
kill "$dhclient_pid"; wait "$dhclient_pid" 2>/dev/null || true
nsx "$CLI" dhclient -6 -N -P -r -sf /bin/true -lf "$work/dhclient6.leases" \
  -pf "$work/dhclient.pid" c0 >>"$work/dhclient.log" 2>&1
query --address "$address"
sleep 1

for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
for f in client-relay relay-server leasequery; do cp "$work/$f.pcap" "$OUT/$f.pcap"; done
cp "$work/dhclient6.leases" "$OUT/isc-dhclient6.leases"
cp "$work/dhcpd6.leases" "$OUT/isc-dhcpd6.leases"
echo "wrote $OUT/{client-relay,relay-server,leasequery}.pcap and the ISC lease files"
