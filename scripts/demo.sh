#!/usr/bin/env bash
# The main job: one node (a namespace made here) running routemesh with an overlay network,
# a 3-replica whoami service and a client task whose curl loop walks over the replicas.
# Everything is made inside namespaces this script creates, and torn down at the end
# (KEEP=1 leaves it running and prints how to reach it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
cargo build --quiet --bin routemesh
BIN="$PWD/target/debug"
export PATH="$BIN:$PATH"

NS="rmdemo$$"
DIR="/tmp/$NS"
export ROUTEMESH_HOST="$DIR/run/routemesh.sock"

cleanup() {
  routemesh service rm web client >/dev/null 2>&1 || true
  for _ in $(seq 50); do
    [ -z "$(ls "$DIR/run/netns" 2>/dev/null | grep '^task-' || true)" ] && break
    sleep 0.1
  done
  routemesh network rm app >/dev/null 2>&1 || true
  sleep 0.5
  [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  for f in "$DIR"/run/netns/*; do [ -e "$f" ] && { umount -l "$f" 2>/dev/null; rm -f "$f"; }; done
  umount -l "$DIR/run/netns" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}
if [ "${KEEP:-0}" != 1 ]; then trap cleanup EXIT; fi

ip netns add "$NS"
mkdir -p "$DIR"
# nsenter --net keeps our mount namespace, so the daemon's named namespaces stay visible.
nsenter --net="/run/netns/$NS" routemesh daemon --node-name demo-node \
  --state-dir "$DIR/state" --run-dir "$DIR/run" >"$DIR/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do routemesh node ls >/dev/null 2>&1 && break; sleep 0.1; done

set -x
routemesh network create --driver overlay app
routemesh service create --name web --replicas 3 --network app -- routemesh whoami --port 80
routemesh service create --name client --network app -- sleep infinity
routemesh task ls
set +x

IPS=$(routemesh task ls --service web --format json | python3 -c '
import json,sys
for t in json.load(sys.stdin):
    print(t["addresses"][0]["address"].split("/")[0])')
echo "curl loop from client.1 over the web tasks:"
for round in 1 2 3; do
  for ip in $IPS; do
    who=$(routemesh exec client.1 -- curl -s --max-time 2 "http://$ip/" | sed -n 's/^Task: //p')
    echo "  round $round: http://$ip/ answered by $who"
  done
done

if [ "${KEEP:-0}" = 1 ]; then
  echo "left running: export ROUTEMESH_HOST=$ROUTEMESH_HOST; daemon pid $DAEMON; log $DIR/daemon.log"
fi
