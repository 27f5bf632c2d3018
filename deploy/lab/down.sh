#!/usr/bin/env bash
# Removes the lab made by deploy/lab/up.sh: its daemons, namespaces and files.
set -uo pipefail
DIR="${LQLAB_DIR:-/tmp/lqlab}"
quiet=false
[ "${1:-}" = --quiet ] && quiet=true
[ "$(id -u)" = 0 ] || { echo "down.sh: run as root" >&2; exit 1; }
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^lqlab-'); do
  # Every process in the namespace is the lab's (dhcpd, dhcrelay, dhclient, lqagent). SIGTERM
  # first: lqagent then writes its state and exits (leaving its routes, which go with the
  # namespace); whatever is still there after 2 s is killed.
  for pid in $(ip netns pids "$ns" 2>/dev/null); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = lqagent ] && ! $quiet; then
      echo "stopping lqagent (pid $pid) in $ns"
    fi
    kill "$pid" 2>/dev/null
  done
  for _ in $(seq 1 20); do
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
    sleep 0.1
  done
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns"
  $quiet || echo "removed namespace $ns"
done
rm -rf "$DIR"
$quiet || echo "lab removed"
exit 0
