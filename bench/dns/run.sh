#!/usr/bin/env bash
# Side-by-side DNS benchmark (not a test): routemesh's resolver, unbound and aardvark-dns serve
# the same names; dnsperf measures queries/s and latency; /proc/<pid>/stat gives the server's
# CPU time per query. Each server is pinned to core 0, dnsperf and the shared upstream to core 1.
# Hits: svc0..svcN-1 (A). Misses: 1000 names under miss.example., forwarded by every server to
# the same upstream (an unbound on 127.0.0.54:53 answering NXDOMAIN + SOA for everything).
# Needs root (aardvark reads /etc/resolv.conf; we bind-mount ours in a private mount namespace).
# apt-get install -y dnsperf unbound aardvark-dns
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/routemesh-dns-bench.XXXXXX)
DURATION=${DURATION:-6}
SIZES=${SIZES:-"100 10000"}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
UPSTREAM=127.0.0.54
AARDVARK=/usr/lib/podman/aardvark-dns
CLK_TCK=$(getconf CLK_TCK)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in dnsperf unbound "$AARDVARK"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y dnsperf unbound aardvark-dns)" >&2; exit 1; }
done

cargo build --quiet --release -p routemesh-dns --example dns_bench_server --manifest-path "$ROOT/Cargo.toml"
BENCH_SERVER="$ROOT/target/release/examples/dns_bench_server"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_answer() { # port name
    for _ in $(seq 50); do
        dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server on port $1 does not answer" >&2; return 1
}

unbound_conf() { # file interface extra...
    local file=$1 iface=$2; shift 2
    cat >"$file" <<CONF
server:
  interface: $iface
  num-threads: 1
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$WORK"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  qname-minimisation: no
  msg-cache-size: 16m
  rrset-cache-size: 32m
CONF
    printf '%s\n' "$@" >>"$file"
}

# Shared upstream for misses.
unbound_conf "$WORK/upstream.conf" "$UPSTREAM@53" \
    '  local-zone: "." static' '  local-data: ". 300 IN SOA ns. host. 1 3600 600 86400 300"'
taskset -c "$CLIENT_CORE" unbound -c "$WORK/upstream.conf" &
PIDS+=($!)
sleep 0.5

for i in $(seq 0 999); do echo "miss$i.miss.example. A"; done >"$WORK/misses.txt"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

measure() { # server names kind pid port queryfile
    local server=$1 names=$2 kind=$3 pid=$4 port=$5 file=$6 before after out qps lat lost done_q
    # Warm-up (fills caches for misses, as a resolver would be in steady state).
    taskset -c "$CLIENT_CORE" dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l 1 >/dev/null 2>&1 || true
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CORE" dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$DURATION" 2>&1)
    after=$(cpu_ticks "$pid")
    done_q=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    awk -v s="$server" -v n="$names" -v k="$kind" -v q="$qps" -v l="$lat" -v lost="$lost" \
        -v d="$done_q" -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {
            cpu = (d > 0) ? t / hz / d * 1e6 : 0
            printf "%s\t%s\t%s\t%.0f\t%.1f\t%.2f\t%s\n", s, n, k, q, l * 1e6, cpu, lost
        }' >>"$RESULTS"
}

for n in $SIZES; do
    for i in $(seq 0 $((n - 1))); do echo "svc$i A"; done >"$WORK/hits-$n.txt"

    # routemesh
    taskset -c "$SERVER_CORE" "$BENCH_SERVER" --names "$n" --listen 127.0.0.1:5301 --upstream "$UPSTREAM:53" 2>/dev/null &
    pid=$!; PIDS+=($pid)
    wait_answer 5301 svc0
    measure routemesh "$n" hits "$pid" 5301 "$WORK/hits-$n.txt"
    measure routemesh "$n" misses "$pid" 5301 "$WORK/misses.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    # unbound: local-data for hits, forward-zone for misses
    {
        for i in $(seq 0 $((n - 1))); do
            printf '  local-data: "svc%d. 5 IN A 10.%d.%d.%d"\n' "$i" $(((i + 1) >> 16 & 255)) $(((i + 1) >> 8 & 255)) $(((i + 1) & 255))
        done
        printf 'forward-zone:\n  name: "."\n  forward-addr: %s@53\n' "$UPSTREAM"
    } >"$WORK/unbound-data-$n.conf"
    unbound_conf "$WORK/unbound-$n.conf" "127.0.0.1@5302"
    cat "$WORK/unbound-data-$n.conf" >>"$WORK/unbound-$n.conf"
    taskset -c "$SERVER_CORE" unbound -c "$WORK/unbound-$n.conf" &
    pid=$!; PIDS+=($pid)
    wait_answer 5302 svc0
    measure unbound "$n" hits "$pid" 5302 "$WORK/hits-$n.txt"
    measure unbound "$n" misses "$pid" 5302 "$WORK/misses.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true

    # aardvark-dns: one network file; dnsperf's address (127.0.0.1) is a "container" on it so
    # aardvark answers it. It daemonizes and writes its pid into the config dir.
    cfg="$WORK/aardvark-$n"; mkdir -p "$cfg"
    {
        echo "127.0.0.1"
        echo "client 127.0.0.1  client"
        for i in $(seq 0 $((n - 1))); do
            printf 'c%d 10.%d.%d.%d  svc%d\n' "$i" $(((i + 1) >> 16 & 255)) $(((i + 1) >> 8 & 255)) $(((i + 1) & 255)) "$i"
        done
    } >"$cfg/bench"
    echo "nameserver $UPSTREAM" >"$WORK/resolv.conf"
    unshare -m sh -c "mount --bind '$WORK/resolv.conf' /etc/resolv.conf && exec taskset -c $SERVER_CORE $AARDVARK -c '$cfg' -p 5303 run" >/dev/null 2>&1
    for _ in $(seq 50); do [ -s "$cfg/aardvark.pid" ] && break; sleep 0.1; done
    pid=$(cat "$cfg/aardvark.pid"); PIDS+=($pid)
    wait_answer 5303 svc0
    measure aardvark-dns "$n" hits "$pid" 5303 "$WORK/hits-$n.txt"
    measure aardvark-dns "$n" misses "$pid" 5303 "$WORK/misses.txt"
    kill "$pid" 2>/dev/null || true
done

echo
echo "| server | names | queries | queries/s | avg latency (us) | server CPU per query (us) | lost |"
echo "|---|---:|---|---:|---:|---:|---:|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7}' "$RESULTS"
