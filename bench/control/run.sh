#!/usr/bin/env bash
# Control-plane benchmark (issue 12, item 5; not a test): per-create latency, daemon CPU per
# create and RSS at growing numbers of services, and how fast a scale change reaches the VIP
# and every node's published port, on one node (local store) and on three nodes (etcd).
#
#   sudo bench/control/run.sh                        # SIZES="100 1000 10000", both topologies
#   sudo SIZES="100 1000" SCALE_RUNS=5 bench/control/run.sh    # a quick run
#
# Env: SIZES (increasing, default "100 1000 10000"), TOPOLOGIES ("A B": A = 1 node on the local
# store, B = 3 nodes on etcd), WINDOW (creates measured before each size, 100), SCALE_RUNS (20),
# IDLE_SECS (background CPU measured at the largest size with nothing changing, 60),
# SUBNET (the overlay's, 10.96.0.0/16: one VIP per service), OUT (results file, default
# bench/control/results/<UTC date-time>.md), CARGO_TARGET_DIR (default <repo>/target; not under
# /tmp or /run: tasks run `routemesh whoami` from it on the host's root with a private /tmp).
# Prints the markdown tables and keeps them in OUT. Needs root, runc, etcd, openssl.
# Everything lives in namespaces under a scratch directory and is removed at the end, also on
# failure or Ctrl-C; nothing is added to the machine's own namespace.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$ROOT/bench/control/results/$(date -u +%Y-%m-%dT%H%M).md}

[ "$(id -u)" = 0 ] || { echo "bench/control/run.sh: needs root" >&2; exit 1; }
for tool in runc etcd openssl; do
    command -v "$tool" >/dev/null || { echo "bench/control/run.sh: missing $tool" >&2; exit 1; }
done
case $TARGET in
    /tmp/* | /run/*) echo "CARGO_TARGET_DIR=$TARGET: tasks cannot see /tmp or /run; use another" >&2; exit 1 ;;
esac

echo "building (release) ..." >&2
cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" --target-dir "$TARGET" \
    --bin routemesh --example control_bench
BIN=$(cd "$TARGET/release" && pwd)/routemesh
BENCH=$(cd "$TARGET/release/examples" && pwd)/control_bench

WORK=$(mktemp -d /tmp/routemesh-control-bench.XXXXXX)
BENCH_PID=''
cleanup() {
    local rc=$?
    set +e
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID"
        for _ in $(seq 50); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
    fi
    # The program tears its topologies down itself; this catches what a killed run left:
    # daemons, task containers, etcd, namespaces, etcd's data in /dev/shm.
    local d
    for d in "$WORK"/topo-*; do
        [ -d "$d" ] && "$BIN" demo --down "$d" >/dev/null
    done
    rmdir "$WORK" 2>/dev/null || echo "left $WORK behind (inspect, then rm -rf)" >&2
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

COMMAND="${SIZES:+SIZES=\"$SIZES\" }${TOPOLOGIES:+TOPOLOGIES=\"$TOPOLOGIES\" }${WINDOW:+WINDOW=$WINDOW }${SCALE_RUNS:+SCALE_RUNS=$SCALE_RUNS }${IDLE_SECS:+IDLE_SECS=$IDLE_SECS }${SUBNET:+SUBNET=$SUBNET }bench/control/run.sh"
BENCH_COMMAND=$COMMAND "$BENCH" --bin "$BIN" --work "$WORK" --out "$OUT" &
BENCH_PID=$!
wait "$BENCH_PID"
