#!/usr/bin/env bash
# Records real Kea 3 leasequery traffic into tests/data/kea/ (see README.md there). CI does not
# run it: it needs a Kea build. Run as root:
#
#   KEA_BUILD=/path/to/kea-build tests/data/kea/record.sh
#
# KEA_BUILD is a meson build directory of Kea with src/bin/dhcp6/kea-dhcp6 and the lease_query
# and lease_cmds hooks built. LQAGENT= and LQBULK= name prebuilt binaries (default: built here).
# Needs isc-dhcp-relay and isc-dhcp-client (dhcrelay -6, dhclient -6), tcpdump, iproute2, python3.
#
#   rec-srv: kea-dhcp6   s0 2001:db8::1/64 ── up0 2001:db8::2/64 (+ 2001:db8::3)   rec-ac: dhcrelay -6 -I
#                                                sub0 2001:db8:1::1/64 ── c0   rec-cli: dhclient -6 -N -P -D LL
#
# tcpdump on up0 in the access-concentrator namespace writes:
#   relay-server.pcap  the client's exchanges as RELAY-FORW / RELAY-REPL (Kea's side of them)
#   leasequery.pcap    LEASEQUERY / LEASEQUERY-REPLY over UDP (port 546 ↔ 547)
#   bulk.pcap          bulk leasequery over TCP port 547
# and Kea's lease file is saved as kea-leases6.csv.
#
# PART=unknown-link records, after the same set-up, only queries by address that name a link Kea
# does not serve (2001:db8:99::1) and one that names the client's own link, into
# kea-unknown-link.pcap; nothing else is written.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
OUT="${OUT:-$here}"
[ "$(id -u)" = 0 ] || { echo "record.sh: run as root (network namespaces)" >&2; exit 1; }
: "${KEA_BUILD:?set KEA_BUILD to a Kea meson build directory}"
KEA="$KEA_BUILD/src/bin/dhcp6/kea-dhcp6"
[ -x "$KEA" ] || { echo "record.sh: no $KEA" >&2; exit 1; }

target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [ -z "${LQAGENT:-}" ]; then
  (cd "$repo" && cargo build --quiet --bin lqagent)
  LQAGENT="$target/debug/lqagent"
fi
if [ -z "${LQBULK:-}" ]; then
  (cd "$repo" && cargo build --quiet --example lqbulk)
  LQBULK="$target/debug/examples/lqbulk"
fi

tag="rec$$"
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
wait_until() {
  local t=$1; shift
  for _ in $(seq $((t * 10))); do "$@" && return 0; sleep 0.1; done
  echo "record.sh: timed out: $*" >&2
  for f in "$work"/*.log; do echo "--- $f"; tail -50 "$f"; done >&2
  return 1
}

mkns "$SRV"; mkns "$AC"; mkns "$CLI"
ip link add s0 netns "$SRV" address 02:00:00:00:01:01 type veth \
  peer name up0 netns "$AC" address 02:00:00:00:02:01
ip link add sub0 netns "$AC" address 02:00:00:00:02:02 type veth \
  peer name c0 netns "$CLI" address 02:00:00:00:03:01
nsx "$SRV" ip -6 addr add 2001:db8::1/64 dev s0 nodad
nsx "$AC" ip -6 addr add 2001:db8::2/64 dev up0 nodad
# A second address on the same interface that Kea's requesters list does not name.
nsx "$AC" ip -6 addr add 2001:db8::3/64 dev up0 nodad
nsx "$AC" ip -6 addr add 2001:db8:1::1/64 dev sub0 nodad
nsx "$SRV" ip link set s0 up
nsx "$AC" ip link set up0 up
nsx "$AC" ip link set sub0 up
nsx "$CLI" ip link set c0 up
nsx "$AC" sysctl -qw net.ipv6.conf.all.forwarding=1
nsx "$SRV" ip -6 route add 2001:db8:1::/64 via 2001:db8::2

# Kea 3 refuses paths outside its configured directories unless these name them.
mkdir -p "$work/hooks"
ln -s "$KEA_BUILD/src/hooks/dhcp/lease_query/libdhcp_lease_query.so" "$work/hooks/"
ln -s "$KEA_BUILD/src/hooks/dhcp/lease_cmds/libdhcp_lease_cmds.so" "$work/hooks/"
# The hooks find Kea's libraries by $ORIGIN-relative run paths, which the links above break.
LD_LIBRARY_PATH="$(find "$KEA_BUILD/src/lib" -name 'libkea-*.so' -printf '%h\n' | sort -u | paste -sd:)"
export LD_LIBRARY_PATH
export KEA_DHCP_DATA_DIR="$work" KEA_CONTROL_SOCKET_DIR="$work" KEA_HOOKS_PATH="$work/hooks"
export KEA_LOCKFILE_DIR="$work" KEA_PIDFILE_DIR="$work" KEA_LOG_FILE_DIR="$work"
cp "$here/kea-dhcp6.json" "$work/kea-dhcp6.json"
ip netns exec "$SRV" "$KEA" -t "$work/kea-dhcp6.json" >"$work/kea-check.log" 2>&1 ||
  { cat "$work/kea-check.log" >&2; exit 1; }
ip netns exec "$SRV" env KEA_DHCP_DATA_DIR="$work" "$KEA" -c "$work/kea-dhcp6.json" \
  >"$work/kea.log" 2>&1 &
pids+=($!)
wait_until 20 grep -q "DHCP6_STARTED" "$work/kea.log"
kea_cmd() {  # JSON command over Kea's control socket; prints the answer
  ip netns exec "$SRV" python3 - "$work/kea6.sock" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
out = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    out += chunk
print(out.decode())
EOF
}
echo "kea: $("$KEA" -V | head -1)"

ip netns exec "$AC" dhcrelay -6 -d -I -pf "$work/dhcrelay.pid" -l sub0 -u 2001:db8::1%up0 \
  >"$work/dhcrelay.log" 2>&1 &
pids+=($!)
wait_until 10 grep -q "Sending on" "$work/dhcrelay.log"

capture() {  # name filter
  ip netns exec "$AC" tcpdump -Z root -U -n -i up0 -w "$work/$1.pcap" "$2" \
    >"$work/tcpdump-$1.log" 2>&1 &
  pids+=($!)
  wait_until 10 grep -q "listening on" "$work/tcpdump-$1.log"
}
capture relay-server "udp port 547 and not udp port 546"
capture leasequery "udp port 546 and host 2001:db8::1"
capture bulk "tcp port 547"

# A real client through the real relay: SOLICIT, ADVERTISE, REQUEST, REPLY (DUID-LL: stable).
ip netns exec "$CLI" dhclient -6 -N -P -D LL -d -sf /bin/true -lf "$work/dhclient6.leases" \
  -pf "$work/dhclient.pid" c0 >"$work/dhclient.log" 2>&1 &
dhclient_pid=$!
pids+=("$dhclient_pid")
bound() { grep -q iaaddr "$work/dhclient6.leases" 2>/dev/null && grep -q iaprefix "$work/dhclient6.leases"; }
wait_until 30 bound
field() { grep "$1" "$work/dhclient6.leases" | tail -1 | awk '{print $2}'; }
address="$(field iaaddr)"
prefix="$(field iaprefix)"
duid="00030001020000000301"
inside_prefix="${prefix%/*}1"
echo "bound: address $address prefix $prefix client-id $duid"

# Volume and relay identities by lease6-add: clients 02:00:00:00:04:NN behind a relay whose
# RELAY-FORW carried RELAY_ID (DUID-LL 02:00:00:00:02:02) and REMOTE_ID (enterprise 4491, the
# client's MAC), stored as Kea stores relay information (user-context ISC relay-info).
relay_id="00030001020000000202"
add_lease() {  # type address-or-prefix plen duid iaid subnet mac
  local type=$1 addr=$2 plen=$3 d=$4 iaid=$5 subnet=$6 mac=$7
  local remote="0000118b$mac"
  local opts="0035000a${relay_id}0025000a${remote}"
  local link="2001:db8:${subnet}::1" peer="fe80::ff:fe00:4${mac: -2}"
  kea_cmd "{\"command\": \"lease6-add\", \"arguments\": {\"type\": \"$type\",
    \"ip-address\": \"$addr\", \"prefix-len\": $plen, \"duid\": \"$d\", \"iaid\": $iaid,
    \"subnet-id\": $subnet, \"preferred-lft\": 300, \"valid-lft\": 600,
    \"user-context\": {\"ISC\": {\"relay-info\": [{\"hop\": 0, \"link\": \"$link\",
      \"peer\": \"$peer\", \"options\": \"0x$opts\", \"relay-id\": \"$relay_id\",
      \"remote-id\": \"$remote\"}]}}}}" >>"$work/lease6-add.log"
}
for n in 1 2 3 4 5 6; do
  mac="0200000004$(printf %02x "$n")"
  d="00030001$mac"
  add_lease IA_NA "2001:db8:1::$((0x150 + n))" 128 "$d" 1 1 "$mac"
  add_lease IA_PD "2001:db8:1$(printf %02x "$((0x40 + n))")::" 56 "$d" 2 1 "$mac"
done
for n in 7 8; do
  mac="0200000004$(printf %02x "$n")"
  add_lease IA_NA "2001:db8:2::$((0x150 + n))" 128 "00030001$mac" 1 2 "$mac"
done
# The real client also holds an address on the second link: QUERY_BY_CLIENTID over every link
# then finds it on two links (LQ_CLIENT_LINK).
add_lease IA_NA "2001:db8:2::1a0" 128 "$duid" 9 2 020000000301
grep -c '"result": 0' "$work/lease6-add.log" | sed 's/^/lease6-add ok: /'
# CLT_TIME and the remaining lifetimes count from each lease's last transaction.
sleep 3

query() {
  echo "+ lqagent query $*"
  nsx "$AC" "$LQAGENT" query --server 2001:db8::1 --interface up0 --attempts 1 --timeout 2 \
    --bind '[2001:db8::2]:546' "$@" || true
}
if [ "${PART:-all}" = unknown-link ]; then
  query --address "$address" --link 2001:db8:99::1
  query --address "$inside_prefix" --link 2001:db8:99::1
  query --address "$address" --link 2001:db8:1::1
  sleep 1
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  cp "$work/leasequery.pcap" "$OUT/kea-unknown-link.pcap"
  echo "wrote $OUT/kea-unknown-link.pcap"
  exit 0
fi
query --address "$address" --relay-data
query --address "$address" --link 2001:db8:1::1
query --address "$inside_prefix"
query --address 2001:db8:1::1ff
query --address 2001:db8:99::1
query --client-id "$duid"
query --client-id "$duid" --link 2001:db8:1::1
query --client-id "$duid" --link 2001:db8:99::1
query --client-id 00030001020000000499
query --address 2001:db8:1::151
echo "+ lqagent query from 2001:db8::3 (not a listed requester)"
nsx "$AC" "$LQAGENT" query --server 2001:db8::1 --interface up0 --attempts 1 --timeout 1 \
  --bind '[2001:db8::3]:546' --address "$address" || true

# Queries lqagent never sends, built by hand: RFC 5007 query types Kea does not serve over UDP
# and malformed ones. LEASEQUERY from [2001:db8::2]:546 with our DUID-LL.
raw() {  # description query-type link-hex options-hex
  echo "+ raw LEASEQUERY: $1"
  ip netns exec "$AC" python3 - "$2" "$3" "$4" <<'EOF' || true
import socket, sys
qt, link, opts = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
def opt(code, data): return code.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
client = opt(1, bytes.fromhex("00030001020000000201"))
lq = opt(44, bytes([qt]) + link + opts)
msg = bytes([14, 0x4b, 0x45, 0x41]) + client + lq
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("2001:db8::2", 546))
s.settimeout(2)
s.sendto(msg, ("2001:db8::1", 547))
try:
    data, peer = s.recvfrom(65535)
    print("  reply", data.hex())
except socket.timeout:
    print("  no reply")
EOF
}
zero="00000000000000000000000000000000"
raw "unknown query type 9" 9 "$zero" ""
raw "QUERY_BY_LINK_ADDRESS (4) over UDP" 4 "20010db8000100000000000000000001" ""
raw "QUERY_BY_ADDRESS without IAADDR" 1 "$zero" ""
raw "QUERY_BY_CLIENTID without CLIENTID" 2 "$zero" ""

bulk() {
  echo "+ lqbulk $*"
  nsx "$AC" "$LQBULK" --server '[2001:db8::1]:547' --duid 00030001020000000201 "$@" || true
}
# With two addresses on up0 the kernel may pick either: name the listed one.
bulk_listed() { bulk --source 2001:db8::2 "$@"; }
bulk_listed --link 2001:db8:1::1
bulk_listed --relay-id "$relay_id"
bulk_listed --remote-id 4491:020000000403
bulk_listed --link 2001:db8:99::1
bulk_listed --link 2001:db8:2::1 --remote-id 4491:020000000401 --pipelining --data-timeout 3
bulk --source 2001:db8::3 --link 2001:db8:1::1 --data-timeout 3

# RELEASE through the relay, then ask again.
kill "$dhclient_pid"; wait "$dhclient_pid" 2>/dev/null || true
nsx "$CLI" dhclient -6 -N -P -D LL -r -sf /bin/true -lf "$work/dhclient6.leases" \
  -pf "$work/dhclient.pid" c0 >>"$work/dhclient.log" 2>&1
query --address "$address"
query --address "$inside_prefix"
sleep 1

for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()
for f in relay-server leasequery bulk; do cp "$work/$f.pcap" "$OUT/kea-$f.pcap"; done
cp "$work/kea-leases6.csv" "$OUT/kea-leases6.csv"
echo "wrote $OUT/kea-{relay-server,leasequery,bulk}.pcap and kea-leases6.csv"
