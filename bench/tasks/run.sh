#!/usr/bin/env bash
# Task start benchmark (not a test): time from `service create` until every task answers HTTP,
# for tasks as OCI containers under runc (this tree) against tasks as plain processes (the
# release before the runtime work, d100216), side by side in one run. Each round starts a
# fresh daemon in a fresh network namespace for each binary and each replica count; the order
# of the two binaries alternates between rounds so drift affects both.
# Needs root, runc, curl, jq, nsenter, python3. Nothing is added to the machine's own namespace.
# Usage: bench/tasks/run.sh        env: ROUNDS (5), REPLICAS ("1 20"), OLD_REV (d100216),
#   OLD_TARGET (target dir of the old build, cached: $ROOT/target/bench-old), WARMUP (1),
#   CARGO_TARGET_DIR (target dir of this tree's build, default $ROOT/target)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${ROUNDS:-5}
REPLICAS=${REPLICAS:-"1 20"}
OLD_REV=${OLD_REV:-d100216}
OLD_TARGET=${OLD_TARGET:-$ROOT/target/bench-old}
NEW_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WARMUP=${WARMUP:-1}
WORK=$(mktemp -d /tmp/routemesh-tasks-bench.XXXXXX)
RESULTS=$WORK/results.tsv
NS_PREFIX=rmtb$$-
SEQ=0
# The node being measured, for the trap.
CUR_DIR='' CUR_NS='' DAEMON_PID=''

[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for tool in runc curl nsenter python3 ip jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

# cgroups of nodes named `bench` that exist before we start are not ours to remove.
PRE_CGROUPS=$(ls -d /sys/fs/cgroup/*/routemesh/bench-* 2>/dev/null || true)

# rm -rf, unless something is still mounted below (a task's root is the host's / bound there).
safe_rm_rf() {
    if awk -v d="$1/" 'index($5, d) == 1 {found = 1} END {exit !found}' /proc/self/mountinfo; then
        echo "not removing $1: still mounted below it" >&2
        return 1
    fi
    rm -rf "$1"
}

# Every process whose network namespace is one of the given namespace files gets SIGKILL.
kill_in_netns() {
    local -A inodes=()
    local f pid ns
    for f in "$@"; do
        if mountpoint -q "$f" 2>/dev/null; then inodes["net:[$(stat -L -c %i "$f")]"]=1; fi
    done
    [ ${#inodes[@]} -gt 0 ] || return 0
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || continue
        if [ -n "${inodes[$ns]:-}" ] && [ "$pid" != $$ ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    return 0
}

# Removes everything one measured node made: daemon, containers, processes, mounts,
# namespaces, cgroups, files. Idempotent; safe on a half-made node.
teardown_node() {
    local dir=$1 ns=$2 run=$1/run id f m cg i
    if [ -n "$DAEMON_PID" ]; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for i in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=''
    fi
    [ -n "$dir" ] || return 0
    if [ -d "$run/runtime" ]; then
        for id in $(runc --root "$run/runtime" list -q 2>/dev/null); do
            runc --root "$run/runtime" delete --force "$id" >/dev/null 2>&1 || true
        done
    fi
    local nsfiles=()
    if [ -n "$ns" ] && [ -e "/run/netns/$ns" ]; then nsfiles+=("/run/netns/$ns"); fi
    for f in "$run"/netns/*; do if [ -e "$f" ]; then nsfiles+=("$f"); fi; done
    if [ ${#nsfiles[@]} -gt 0 ]; then kill_in_netns "${nsfiles[@]}"; fi
    for m in "$run"/tasks/*/bundle/rootfs; do
        while mountpoint -q "$m" 2>/dev/null; do umount -l "$m" || break; done
    done
    for f in "$run"/netns/*; do
        [ -e "$f" ] || continue
        while mountpoint -q "$f" 2>/dev/null; do umount -l "$f" || break; done
        rm -f "$f"
    done
    while mountpoint -q "$run/netns" 2>/dev/null; do umount -l "$run/netns" || break; done
    if [ -n "$ns" ]; then ip netns del "$ns" 2>/dev/null || true; fi
    # The runtime removes each container's cgroup; the node's parent cgroup stays.
    for cg in /sys/fs/cgroup/*/routemesh/bench-*; do
        [ -d "$cg" ] || continue
        grep -qxF "$cg" <<<"$PRE_CGROUPS" && continue
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        find "$cg" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
        rmdir "$cg" 2>/dev/null || true
    done
    safe_rm_rf "$dir"
}

cleanup() {
    local rc=$?
    set +e
    teardown_node "$CUR_DIR" "$CUR_NS"
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX"); do ip netns del "$ns"; done
    if [ -d "$WORK/old" ]; then
        git -C "$ROOT" worktree remove --force "$WORK/old" >/dev/null 2>&1
    fi
    git -C "$ROOT" worktree prune
    safe_rm_rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both binaries, release mode.
echo "building HEAD ($(git -C "$ROOT" rev-parse --short HEAD)) and $OLD_REV ..." >&2
cargo build --quiet --release -p routemesh --manifest-path "$ROOT/Cargo.toml" --target-dir "$NEW_TARGET"
git -C "$ROOT" worktree add --quiet --detach "$WORK/old" "$OLD_REV"
cargo build --quiet --release -p routemesh --manifest-path "$WORK/old/Cargo.toml" --target-dir "$OLD_TARGET"
git -C "$ROOT" worktree remove --force "$WORK/old"
# The binaries stay in their target dirs: a container on the host's root gets its own /tmp
# and /run, so a copy under $WORK (in /tmp) would not be found inside it.
BINDIR_old=$(cd "$OLD_TARGET/release" && pwd)
BINDIR_new=$(cd "$NEW_TARGET/release" && pwd)
for d in "$BINDIR_old" "$BINDIR_new"; do
    case $d in /tmp/* | /run/*) echo "$d: tasks in containers cannot see /tmp or /run; use another target dir" >&2; exit 1 ;; esac
done

now_ns() { date +%s%N; }

# One measurement: a fresh node running binary `kind` (old|new), `replicas` tasks.
# Appends `kind replicas round cli_ms answer_ms spread_ms` to $RESULTS unless round is 0.
measure() {
    local kind=$1 replicas=$2 round=$3
    local bindir
    if [ "$kind" = old ]; then bindir=$BINDIR_old; else bindir=$BINDIR_new; fi
    local bin=$bindir/routemesh
    SEQ=$((SEQ + 1))
    CUR_NS=$NS_PREFIX$SEQ CUR_DIR=$WORK/node-$SEQ
    local run=$CUR_DIR/run
    mkdir -p "$CUR_DIR"
    ip netns add "$CUR_NS"
    ip -n "$CUR_NS" link set lo up
    # nsenter, not `ip netns exec`: that remounts /sys and would hide the daemon's mounts.
    PATH="$bindir:$PATH" nsenter --net="/run/netns/$CUR_NS" "$bin" daemon --node-name bench \
        --state-dir "$CUR_DIR/state" --run-dir "$run" >"$CUR_DIR/daemon.log" 2>&1 &
    DAEMON_PID=$!
    rm_cli() { PATH="$bindir:$PATH" "$bin" --host "$run/routemesh.sock" "$@"; }
    local i
    for i in $(seq 300); do
        rm_cli node ls >/dev/null 2>&1 && [ -e "$run/netns/ingress_sbox" ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$CUR_DIR/daemon.log" >&2; return 1; }
        sleep 0.1
    done
    [ -e "$run/netns/ingress_sbox" ] || { echo "daemon not ready" >&2; cat "$CUR_DIR/daemon.log" >&2; return 1; }
    rm_cli network create --driver overlay app >/dev/null

    # The clock starts as `service create` starts; the CLI (which polls every 200 ms until every
    # task runs) goes on in the background while we poll the tasks over HTTP from the overlay's
    # namespace: each task as soon as it is running (so its leg is up and connecting never
    # waits on ARP), all pending ones in one curl per pass.
    local t0 t_cli t_ans cli_pid tasks pending answered urls ip i n_ok
    t0=$(now_ns)
    (
        rm_cli service create --name web --replicas "$replicas" --network app -p 8080:80 \
            -- routemesh whoami --port 80 >"$CUR_DIR/create.out" 2>&1
        now_ns >"$CUR_DIR/create.end"
    ) &
    cli_pid=$!
    declare -A ok=()
    for i in $(seq 3000); do
        # `address state` of each task on network app.
        tasks=$(rm_cli task ls --service web --format json 2>/dev/null | jq -r '.[] | .state as $s
            | .addresses[] | select(.network == "app") | "\(.address | split("/")[0]) \($s)"' || true)
        urls=()
        while read -r ip state; do
            [ "$state" = running ] && [ -z "${ok[$ip]:-}" ] && urls+=("http://$ip:80/")
        done <<<"$tasks"
        if [ ${#urls[@]} -gt 0 ]; then
            answered=$(nsenter --net="$run/netns/ov-app" curl -s --no-progress-meter \
                --connect-timeout 0.5 -m 1 --parallel --parallel-max 50 -o /dev/null \
                -w '%{http_code} %{url_effective}\n' "${urls[@]}" || true)
            while read -r code url; do
                [ "$code" = 200 ] && { ip=${url#http://}; ok[${ip%%:*}]=1; }
            done <<<"$answered"
        fi
        [ ${#ok[@]} -ge "$replicas" ] && break
        kill -0 "$cli_pid" 2>/dev/null || [ -s "$CUR_DIR/create.end" ] || break
        sleep 0.01
    done
    t_ans=$(now_ns)
    n_ok=${#ok[@]}
    wait "$cli_pid" || { echo "service create failed:" >&2; cat "$CUR_DIR/create.out" >&2; return 1; }
    [ "$n_ok" -ge "$replicas" ] || { echo "only $n_ok of $replicas tasks answered" >&2; return 1; }
    t_cli=$(cat "$CUR_DIR/create.end")
    # From the daemon's log: when the service was created and each task's process (old) or
    # container (runc run returned, new) started, in ms after `service create` began.
    local starts
    starts=$(sed 's/\x1b\[[0-9;]*m//g' "$CUR_DIR/daemon.log" |
        awk '/service created/ || /task (process|container) started/ {print $1, ($0 ~ /service created/) ? "c" : "t"}' |
        python3 -c '
import sys, datetime
t0 = int(sys.argv[1]) / 1e6
ms = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000 - t0
rows = [l.split() for l in sys.stdin]
c = [ms(t) for t, k in rows if k == "c"]
t = sorted(ms(t) for t, k in rows if k == "t")
print("%.0f %.0f %.0f" % (c[0], t[0], t[-1]) if c and t else "- - -")' "$t0")

    local cli_ms=$(((t_cli - t0) / 1000000)) ans_ms=$(((t_ans - t0) / 1000000))
    local user_ms=$(( (t_cli > t_ans ? t_cli : t_ans) - t0 ))
    user_ms=$((user_ms / 1000000))
    read -r created first last <<<"$starts"
    printf '%-3s replicas=%-3s round=%s: all answer %5d ms, create returns %5d ms (both %5d); created at %s, tasks started %s..%s ms\n' \
        "$kind" "$replicas" "$round" "$ans_ms" "$cli_ms" "$user_ms" "$created" "$first" "$last" >&2
    [ "$round" = 0 ] || printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$replicas" "$round" \
        "$ans_ms" "$cli_ms" "$user_ms" "$created" "$first" "$last" >>"$RESULTS"

    # Let the daemon stop the tasks itself before it is stopped (teardown_node catches the rest).
    rm_cli service rm web >/dev/null
    for i in $(seq 100); do
        [ "$(rm_cli task ls --format json 2>/dev/null | jq length)" = 0 ] && break
        sleep 0.1
    done
    teardown_node "$CUR_DIR" "$CUR_NS"
    CUR_DIR='' CUR_NS=''
}

: >"$RESULTS"
if [ "$WARMUP" != 0 ]; then
    measure old 1 0
    measure new 1 0
fi
for round in $(seq "$ROUNDS"); do
    for replicas in $REPLICAS; do
        if [ $((round % 2)) = 1 ]; then order="old new"; else order="new old"; fi
        for kind in $order; do measure "$kind" "$replicas" "$round"; done
    done
done

echo
echo "$(nproc) cores, $(runc --version | head -1), $ROUNDS rounds; HEAD $(git -C "$ROOT" rev-parse --short HEAD) against $OLD_REV"
echo
python3 - "$RESULTS" "$OLD_REV" "$(git -C "$ROOT" rev-parse --short HEAD)" <<'PY'
import statistics, sys
from collections import defaultdict
path, old_rev, head = sys.argv[1:]
# (kind, replicas) -> rounds of {answer, cli, user, created, first, last} in ms after `service create`
rows = defaultdict(list)
for line in open(path):
    kind, reps, _round, *vals = line.rstrip("\n").split("\t")
    rows[(kind, int(reps))].append(dict(zip(("answer", "cli", "user", "created", "first", "last"),
                                            (float(v) if v != "-" else float("nan") for v in vals))))
if not rows:
    sys.exit("no rounds measured")
reps = sorted({r for _, r in rows})
med = lambda k, r, f: statistics.median(x[f] for x in rows[(k, r)])
mn = lambda k, r, f: min(x[f] for x in rows[(k, r)])
n = len(rows[("old", reps[0])])

def table(field, title):
    print(f"{title}, median (min) of {n} rounds, ms:")
    print()
    print(f"| replicas | plain processes ({old_rev}) | runc containers ({head}) | ratio |")
    print("|---:|---:|---:|---:|")
    for r in reps:
        o, c = med("old", r, field), med("new", r, field)
        print(f"| {r} | {o:.0f} ({mn('old', r, field):.0f}) | {c:.0f} ({mn('new', r, field):.0f}) | {c / o:.2f} |")
    if len(reps) >= 2:
        lo, hi = reps[0], reps[-1]
        per = {k: (med(k, hi, field) - med(k, lo, field)) / (hi - lo) for k in ("old", "new")}
        ratio = f"{per['new'] / per['old']:.2f}" if per["old"] > 0 else "-"
        print(f"| per extra task ({lo} to {hi}) | {per['old']:.1f} | {per['new']:.1f} | {ratio} |")
    print()

table("answer", "From `service create` until every task answers HTTP (polled every ~20-40 ms, beside the CLI)")
table("user", "Until `service create` has returned and every task answers (the CLI polls every 200 ms)")
print("Where the time goes (medians, ms after `service create` began; from the daemon's log: the")
print("service stored, the first and last task's process spawned (processes) or `runc run` returned")
print("(containers)):")
print()
print("| replicas | binary | service stored | first task started | last task started | all answer | create returns |")
print("|---:|---|---:|---:|---:|---:|---:|")
for r in reps:
    for k, name in (("old", f"processes ({old_rev})"), ("new", f"containers ({head})")):
        f = lambda field: f"{med(k, r, field):.0f}"
        print(f"| {r} | {name} | {f('created')} | {f('first')} | {f('last')} | {f('answer')} | {f('cli')} |")
PY
