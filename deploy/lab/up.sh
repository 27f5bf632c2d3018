#!/usr/bin/env bash
# The lqagent lab: real ISC dhcpd -6, dhcrelay -6 and three dhclient -6 -N -P in network
# namespaces, the same topology as tests/support/src/isc.rs:
#
#   lqlab-srv: dhcpd -6   s0 2001:db8::1/64 ── up0 2001:db8::2/64   lqlab-ac: dhcrelay -6 -I
#                                              sub0 2001:db8:1::1/64 ── c0  lqlab-cl0: dhclient
#                                              sub1 2001:db8:2::1/64 ── c0  lqlab-cl1: dhclient
#                                              sub2 2001:db8:3::1/64 ── c0  lqlab-cl2: dhclient
#
# lqagent runs in lqlab-ac beside dhcrelay: it snoops the relayed exchanges on up0 and installs
# a /128 per leased address and a route per delegated prefix (proto 211). The script starts it
# before the clients, waits for them to bind, then prints the routes, `lqagent show bindings`
# and a few metrics.
#
# Run as root. On a fresh Debian machine it installs what is missing (apt packages, the Rust
# release build; LQAGENT=/path/to/lqagent skips it). Files live in /tmp/lqlab (LQLAB_DIR). deploy/lab/down.sh
# removes everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLIENTS=3
DIR="${LQLAB_DIR:-/tmp/lqlab}"

[ "$(id -u)" = 0 ] || { echo "up.sh: run as root (network namespaces)" >&2; exit 1; }

log() { printf '\n=== %s\n' "$*"; }

log "packages"
PKGS=(iproute2 nftables isc-dhcp-server isc-dhcp-relay isc-dhcp-client iputils-ping procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian packages start their own daemons on install; the lab runs its own.
for unit in isc-dhcp-server isc-dhcp-server6 isc-dhcp-relay isc-dhcp-relay6; do
  systemctl stop "$unit" 2>/dev/null || true
done

log "lqagent release build"
if [ -z "${LQAGENT:-}" ]; then   # LQAGENT=/path/to/lqagent skips the build
  if ! command -v cargo >/dev/null; then
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null || apt-get install -y -qq --no-install-recommends cargo rustc
  fi
  cargo build --release --quiet
  LQAGENT="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/lqagent"
fi
"$LQAGENT" version

log "namespaces"
"$(dirname "$0")/down.sh" --quiet || true
mkdir -p "$DIR"
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mkns() {
  ip netns add "$1"
  nsx "$1" ip link set lo up
  # No duplicate address detection: addresses are usable at once (dhclient and dhcrelay bind
  # to them; with DAD they fail for a second or two).
  nsx "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}
mkns lqlab-srv
mkns lqlab-ac
ip link add s0 netns lqlab-srv type veth peer name up0 netns lqlab-ac
nsx lqlab-srv ip link set s0 up
nsx lqlab-ac ip link set up0 up
nsx lqlab-srv ip -6 addr add 2001:db8::1/64 dev s0 nodad
nsx lqlab-ac ip -6 addr add 2001:db8::2/64 dev up0 nodad
nsx lqlab-ac sysctl -qw net.ipv6.conf.all.forwarding=1

{
  echo "default-lease-time 600;"
  echo "preferred-lifetime 300;"
  echo "max-lease-time 7200;"
  echo "allow leasequery;"
  echo "subnet6 2001:db8::/64 { }"
} >"$DIR/dhcpd6.conf"
relay_l=()
for i in $(seq 0 $((CLIENTS - 1))); do
  n=$((i + 1))
  mkns "lqlab-cl$i"
  ip link add "sub$i" netns lqlab-ac type veth peer name c0 netns "lqlab-cl$i"
  nsx lqlab-ac ip link set "sub$i" up
  nsx "lqlab-cl$i" ip link set c0 up
  nsx lqlab-ac ip -6 addr add "2001:db8:$n::1/64" dev "sub$i" nodad
  nsx lqlab-srv ip -6 route add "2001:db8:$n::/64" via 2001:db8::2
  cat >>"$DIR/dhcpd6.conf" <<CONF
subnet6 2001:db8:$n::/64 {
  range6 2001:db8:$n::100 2001:db8:$n::1ff;
  prefix6 2001:db8:${n}00:: 2001:db8:${n}ff:: /56;
}
CONF
  relay_l+=(-l "sub$i")
done

log "dhcpd -6, dhcrelay -6"
: >"$DIR/dhcpd6.leases"
nsx lqlab-srv dhcpd -6 -q -cf "$DIR/dhcpd6.conf" -lf "$DIR/dhcpd6.leases" -pf "$DIR/dhcpd.pid" s0 \
  >"$DIR/dhcpd.log" 2>&1
nsx lqlab-ac dhcrelay -6 -q -I -pf "$DIR/dhcrelay.pid" "${relay_l[@]}" -u 2001:db8::1%up0 \
  >"$DIR/dhcrelay.log" 2>&1
sleep 0.5

log "lqagent configuration for the access concentrator ($DIR/lqagent.toml)"
{
  echo "state_dir = \"$DIR/state\""
  echo
  echo "[snoop]"
  echo "interfaces = [\"up0\"]"
  echo
  echo "[control]"
  echo "socket = \"$DIR/control.sock\""
  echo
  echo "# dhcpd 4.4 has no bulk leasequery (RFC 5460): recovery after a restart uses the state file."
  echo "[bulk]"
  echo "enabled = false"
  echo
  echo "[[servers]]"
  echo "name = \"dhcpd\""
  echo "address = \"2001:db8::1\""
  for i in $(seq 0 $((CLIENTS - 1))); do
    n=$((i + 1))
    echo
    echo "[[links]]"
    echo "name = \"link$i\""
    echo "interface = \"sub$i\""
    echo "link_address = \"2001:db8:$n::1\""
    echo "subscriber_prefixes = [\"2001:db8:$n::/64\", \"2001:db8:${n}00::/40\"]"
  done
} >"$DIR/lqagent.toml"
"$LQAGENT" check-config --config "$DIR/lqagent.toml" >/dev/null && echo "  valid"

log "lqagent run in lqlab-ac (log: $DIR/lqagent.log)"
setsid ip netns exec lqlab-ac "$LQAGENT" run --config "$DIR/lqagent.toml" \
  >"$DIR/lqagent.log" 2>&1 </dev/null &
for _ in $(seq 1 100); do
  grep -q ' ready' "$DIR/lqagent.log" 2>/dev/null && break
  kill -0 $! 2>/dev/null || { cat "$DIR/lqagent.log" >&2; echo "lqagent exited" >&2; exit 1; }
  sleep 0.1
done
grep -q ' ready' "$DIR/lqagent.log" || { cat "$DIR/lqagent.log" >&2; echo "lqagent not ready" >&2; exit 1; }
echo "  ready (pid $!)"

log "dhclient -6 -N -P in $CLIENTS client namespaces"
for i in $(seq 0 $((CLIENTS - 1))); do
  nsx "lqlab-cl$i" dhclient -6 -N -P -nw -sf /bin/true -lf "$DIR/dhclient$i.leases" \
    -pf "$DIR/dhclient$i.pid" c0 >"$DIR/dhclient$i.log" 2>&1
done
for i in $(seq 0 $((CLIENTS - 1))); do
  for _ in $(seq 1 300); do
    grep -q iaprefix "$DIR/dhclient$i.leases" 2>/dev/null && grep -q iaaddr "$DIR/dhclient$i.leases" && break
    sleep 0.1
  done
  addr=$(grep -o 'iaaddr [0-9a-f:]*' "$DIR/dhclient$i.leases" | tail -1 | cut -d' ' -f2)
  prefix=$(grep -o 'iaprefix [0-9a-f:/]*' "$DIR/dhclient$i.leases" | tail -1 | cut -d' ' -f2)
  [ -n "$addr" ] && [ -n "$prefix" ] || { echo "client $i did not bind; see $DIR/dhclient$i.log" >&2; exit 1; }
  # dhclient -sf /bin/true configures nothing: add the address and a default route ourselves.
  nsx "lqlab-cl$i" ip -6 addr add "$addr/128" dev c0 nodad
  nsx "lqlab-cl$i" ip -6 route add default via "2001:db8:$((i + 1))::1" dev c0 onlink
  printf 'client %d (ns lqlab-cl%d): address %s  prefix %s\n' "$i" "$i" "$addr" "$prefix"
done

log "dhcpd's leases ($DIR/dhcpd6.leases)"
grep -E '^(ia-na|ia-pd)|iaaddr|iaprefix|binding state|ends' "$DIR/dhcpd6.leases" | sed 's/^/  /'


log "routes lqagent installed in lqlab-ac (ip -6 route show proto 211)"
want=$((2 * CLIENTS))
for _ in $(seq 1 100); do
  [ "$(nsx lqlab-ac ip -6 route show proto 211 | wc -l)" -ge "$want" ] && break
  sleep 0.1
done
nsx lqlab-ac ip -6 route show proto 211 | sed 's/^/  /'
[ "$(nsx lqlab-ac ip -6 route show proto 211 | wc -l)" -ge "$want" ] ||
  { echo "expected $want routes; see $DIR/lqagent.log" >&2; exit 1; }

log "lqagent show bindings"
"$LQAGENT" show bindings --socket "$DIR/control.sock"

log "a few metrics (lqagent show stats; also http://127.0.0.1:9567/metrics inside lqlab-ac)"
"$LQAGENT" show stats --socket "$DIR/control.sock" |
  grep -E 'lqagent_(route_events_total|routes|bindings|snooped_messages_total)' | sort | sed 's/^/  /'

cat <<EOF_MSG

The lab is up. Look around:
  ip netns exec lqlab-ac ip -6 route          # the access concentrator's routes
  $LQAGENT show bindings --socket $DIR/control.sock
  ip netns exec lqlab-cl0 dhclient -6 -N -P -r -sf /bin/true -lf $DIR/dhclient0.leases -pf $DIR/dhclient0.pid c0
                                              # release client 0: its routes go
  ip netns exec lqlab-cl0 ping -6 -I \$(grep -o 'iaaddr [0-9a-f:]*' $DIR/dhclient0.leases | tail -1 | cut -d' ' -f2) 2001:db8::1
  $LQAGENT check-config --config $DIR/lqagent.toml
Remove it with: deploy/lab/down.sh
EOF_MSG
