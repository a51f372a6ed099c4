#!/bin/sh
# Runs inside the VM (kernel with ip_vs): the routing-mesh scenario with --dataplane ipvs.
#   host: vm/mesh-ipvs-test.sh   (builds routemesh, then vm/run.sh this script + the binary)
# Busybox runs its own applets before PATH: real tools are called by full path.

RM=/files/routemesh
IP=/usr/sbin/ip
IPVSADM=/usr/sbin/ipvsadm
CURL=/usr/bin/curl
RUN=/tmp/n/run
H="--host $RUN/routemesh.sock"
NODE=192.168.90.1
passed=0

fail() {
    echo "FAIL: $*"
    echo "--- daemon log (tail) ---"
    tail -n 40 /tmp/daemon.log
    echo "mesh-ipvs: $passed passed, 1 failed"
    exit 1
}
ok() { passed=$((passed + 1)); echo "ok: $*"; }
step() { echo "== $*"; }
in_ns() { ns=$1; shift; nsenter --net="$ns" "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
    limit=$(($1 * 5)); what=$2; shift 2
    i=0
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt $limit ] && fail "timed out waiting for $what"
        sleep 0.2
    done
}

# spread URL N TASKS... in namespace $SPREAD_NS: N new connections, each task 20%-47%.
spread() {
    url=$1; n=$2; shift 2
    urls=""
    j=0
    while [ $j -lt $n ]; do urls="$urls $url"; j=$((j + 1)); done
    out=$(in_ns "$SPREAD_NS" $CURL -s --max-time 60 -H 'Connection: close' $urls | grep '^Task: ')
    total=$(printf '%s\n' "$out" | grep -c '^Task: ')
    [ "$total" -eq "$n" ] || fail "$url: $total of $n answered"
    for t in "$@"; do
        c=$(printf '%s\n' "$out" | grep -c "^Task: $t\$")
        [ $((c * 100)) -ge $((n * 20)) ] && [ $((c * 100)) -le $((n * 47)) ] ||
            fail "$url: $t answered $c of $n"
    done
    ok "$url: $n connections spread over $*"
}

start_daemon() {
    nsenter --net=/run/netns/node $RM daemon --dataplane ${DATAPLANE:-ipvs} --node-name vm \
        --run-dir $RUN --state-dir /tmp/n/state --log-level debug "$@" >>/tmp/daemon.log 2>&1 &
    DAEMON=$!
    wait_for 30 "the daemon" $RM $H node ls
    wait_for 30 "the ingress sandbox" test -e $RUN/netns/ingress_sbox
}

echo "nameserver 127.0.0.11" >/etc/resolv.conf
step "a node namespace and an outside client joined by a veth"
$IP netns add node
$IP netns add client
$IP link add rmv0 type veth peer name rmv1
$IP link set rmv0 netns node
$IP link set rmv1 netns client
$IP -n node addr add $NODE/24 dev rmv0
$IP -n node link set rmv0 up
$IP -n node link set lo up
$IP -n client addr add 192.168.90.2/24 dev rmv1
$IP -n client link set rmv1 up
$IP -n client link set lo up

step "daemon with --dataplane ipvs"
start_daemon
grep -q 'dataplane: ipvs' /tmp/daemon.log && ok "the daemon says it uses ipvs" ||
    fail "the daemon does not say it uses ipvs"

step "service web, 3 replicas, --publish 8080:80"
$RM $H network create app >/dev/null || fail "network create"
$RM $H service create --name web --replicas 3 --network app --publish 8080:80 \
    -- routemesh whoami --port 80 >/dev/null || fail "service create web"
$RM $H service create --name client --network app --limit-memory 64m --limit-pids 50 \
    -- sleep 100000 >/dev/null || fail "client"
wait_for 20 "the published port" in_ns /run/netns/client $CURL -sf --max-time 2 http://$NODE:8080/

step "tasks are runc containers, limited through cgroup v2"
/usr/sbin/runc --root $RUN/runtime list | grep -Eq '^web\.1 +[0-9]+ +running' ||
    fail "runc does not run web.1: $(/usr/sbin/runc --root $RUN/runtime list)"
ok "runc runs the tasks"
cg=$(ls -d /sys/fs/cgroup/routemesh/vm-*/client.1 2>/dev/null)
[ -n "$cg" ] || fail "no cgroup v2 directory for client.1: $(ls -R /sys/fs/cgroup/routemesh | head)"
[ "$(cat $cg/memory.max)" = 67108864 ] || fail "client.1 memory.max is $(cat $cg/memory.max)"
[ "$(cat $cg/pids.max)" = 50 ] || fail "client.1 pids.max is $(cat $cg/pids.max)"
ok "client.1's cgroup v2 says memory.max 64m and pids.max 50"
[ "$($RM $H exec client.1 -- cat /proc/self/cgroup)" = "0::/" ] ||
    fail "client.1 does not see its own cgroup namespace: $($RM $H exec client.1 -- cat /proc/self/cgroup)"
ok "client.1 sees only its own cgroup (cgroup namespace)"

SPREAD_NS=/run/netns/client spread "http://$NODE:8080/" 300 web.1 web.2 web.3
VIP=$($RM $H service inspect web | sed -n 's/^VIPs *app=//p')
[ -n "$VIP" ] || fail "no VIP for web"
SPREAD_NS=$RUN/netns/task-client.1 spread "http://$VIP/" 300 web.1 web.2 web.3

step "ipvsadm sees fwmark services with masquerading destinations"
sbox=$(in_ns $RUN/netns/ingress_sbox $IPVSADM -Ln)
echo "$sbox"
echo "$sbox" | grep -q '^FWM' && ok "ingress_sbox has an FWM service" || fail "no FWM service in ingress_sbox"
[ "$(echo "$sbox" | grep -c 'Masq')" -eq 3 ] && ok "3 Masq destinations for the published port" ||
    fail "not 3 Masq destinations in ingress_sbox"
ovl=$(in_ns $RUN/netns/ov-app $IPVSADM -Ln)
echo "$ovl"
echo "$ovl" | grep -q '^FWM' && ok "ov-app has an FWM service for the VIP" || fail "no FWM service in ov-app"
# web's VIP and client's VIP each have a service: web's has the 3 destinations.
blocks=$(echo "$ovl" | awk '/^FWM/ {n++} /Masq/ {c[n]++} END {for (i in c) print c[i]}' | sort | tr '\n' ' ')
[ "$blocks" = "1 3 " ] && ok "web's VIP has 3 Masq destinations (client's has 1)" ||
    fail "destinations per VIP service in ov-app: $blocks"

step "scale to 5: 5 destinations"
$RM $H service scale web=5 >/dev/null || fail "scale 5"
wait_for 10 "5 destinations" sh -c "[ \$(nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -Ln | grep -c Masq) -eq 5 ]"
ok "5 destinations after scaling to 5"
wait_for 10 "web's VIP with 5 destinations" sh -c \
    "nsenter --net=$RUN/netns/ov-app $IPVSADM -Ln | awk '/^FWM/ {n++} /Masq/ {c[n]++} END {for (i in c) print c[i]}' | grep -qx 5"
ok "web's VIP in ov-app has 5 destinations too"

step "a stopped task gets weight 0, then a removed one disappears"
pid=$($RM $H task ls --service web --format json | tr ',' '\n' | grep -A0 '"pid"' | head -n 1 | tr -dc 0-9)
[ -n "$pid" ] || fail "no task pid"
kill -9 "$pid"
wait_for 5 "a destination with weight 0" sh -c \
    "nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -Ln | grep Masq | awk '{print \$4}' | grep -qx 0"
ok "the stopped task's destination has weight 0"
$RM $H service scale web=3 >/dev/null || fail "scale 3"
wait_for 10 "3 destinations" sh -c "[ \$(nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -Ln | grep -c Masq) -eq 3 ]"
ok "scaled-down tasks' destinations removed"

step "timeouts: TCP idle default far above Docker's 900 s"
for ns in ingress_sbox ov-app; do
    t=$(in_ns $RUN/netns/$ns $IPVSADM -L --timeout)
    echo "$ns: $t"
    echo "$t" | grep -q 'Timeout (tcp tcpfin udp): 86400 120 300' && ok "$ns: default timeouts" ||
        fail "$ns: timeouts"
    for key in conn_reuse_mode expire_nodest_conn expire_quiescent_template conntrack; do
        v=$(in_ns $RUN/netns/$ns cat /proc/sys/net/ipv4/vs/$key)
        want=1; [ $key = conn_reuse_mode ] && want=0
        [ "$v" = "$want" ] && ok "$ns: vs/$key=$v" || fail "$ns: vs/$key is $v, want $want"
    done
done

step "per-service scheduler"
$RM $H service create --name lcsvc --lb-scheduler lc --network app --publish 8081:80 \
    -- routemesh whoami --port 80 >/dev/null || fail "service create lcsvc"
wait_for 10 "an lc fwmark service" sh -c \
    "nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -Ln | grep -Eq '^FWM +[0-9]+ lc'"
ok "--lb-scheduler lc reached IPVS"

step "restart with --ipvs-tcp-timeout 5: an idle connection is dropped"
kill $DAEMON
wait $DAEMON 2>/dev/null
# This time with --dataplane auto, the default: on this kernel it must take IPVS and say why.
DATAPLANE=auto start_daemon --ipvs-tcp-timeout 5
grep -q 'dataplane: ipvs (auto' /tmp/daemon.log && ok "--dataplane auto chose ipvs" ||
    fail "--dataplane auto did not choose ipvs: $(grep dataplane: /tmp/daemon.log | tail -n 1)"
wait_for 10 "the new timeout" sh -c "nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -L --timeout | grep -q '(tcp tcpfin udp): 5 '"
ok "the TCP timeout reached the kernel"
# An idle connection through the published port (whoami waits for the request).
(sleep 12 | in_ns /run/netns/client nc $NODE 8080 >/dev/null 2>&1) &
wait_for 5 "an established IPVS connection" sh -c \
    "nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -Lnc | grep -q ESTABLISHED"
ok "the idle connection is in IPVS's table"
sleep_start=$(cut -d. -f1 /proc/uptime)
wait_for 12 "the idle connection dropped" sh -c \
    "! nsenter --net=$RUN/netns/ingress_sbox $IPVSADM -Lnc | grep -q ESTABLISHED"
idle=$(( $(cut -d. -f1 /proc/uptime) - sleep_start ))
# Not before the timeout either (uptime counts whole seconds, and the entry may have appeared
# up to a poll before sleep_start).
[ "$idle" -ge 3 ] || fail "the idle connection was dropped after ${idle}s, before the 5 s timeout"
ok "the idle connection was dropped after about ${idle}s of idling"

kill $DAEMON
echo "mesh-ipvs: $passed passed, 0 failed"
exit 0
