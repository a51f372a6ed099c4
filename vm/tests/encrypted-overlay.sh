#!/bin/sh
# Runs inside the VM (a kernel with esp4): two nodes on etcd, an encrypted overlay between
# them. HTTP works across; a capture on the underlay sees ESP and no cleartext VXLAN of that
# network; a key rotation during a request loop loses no request.
#   host: vm/encrypted-overlay-test.sh   (builds routemesh, then vm/run.sh this script + files)
# Busybox runs its own applets before PATH: real tools are called by full path.

RM=/files/routemesh
ETCD=/files/etcd
TCPDUMP=/files/tcpdump
IP=/usr/sbin/ip
CURL=/usr/bin/curl
ETCD_ADDR=192.168.100.254
passed=0

fail() {
    echo "FAIL: $*"
    for n in 1 2; do
        echo "--- n$n: ip -s xfrm state / nft input and mark chains ---"
        nsenter --net=/run/netns/n$n $IP -s xfrm state 2>&1 | grep -E 'src|spi|bytes|packets|error' | head -n 20
        nsenter --net=/run/netns/n$n /usr/sbin/nft list chain ip routemesh input 2>&1
        nsenter --net=/run/netns/n$n /usr/sbin/nft list chain ip routemesh mark_encrypted 2>&1
        nsenter --net=/run/netns/n$n cat /proc/net/xfrm_stat 2>/dev/null | awk '$2 != 0'
        nsenter --net=/run/netns/n$n grep -A1 '^Udp:' /proc/net/snmp
        nsenter --net=/run/netns/n$n grep -A1 '^Ip:' /proc/net/snmp
        nsenter --net=/tmp/n$n/run/netns/ov-sec $IP -s link show 2>&1 | grep -A5 vxlan | head -n 8
    done
    echo "--- underlay capture ---"
    head -n 10 /tmp/esp.txt /tmp/clear.txt /tmp/tcpdump.err 2>/dev/null
    for n in 1 2; do
        echo "--- daemon log of n$n (tail) ---"
        tail -n 30 /tmp/n$n/daemon.log
    done
    echo "encrypted-overlay: $passed passed, 1 failed"
    exit 1
}
ok() { passed=$((passed + 1)); echo "ok: $*"; }
step() { echo "== $*"; }
rm1() { $RM --host /tmp/n1/run/routemesh.sock "$@"; }
rm2() { $RM --host /tmp/n2/run/routemesh.sock "$@"; }

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

echo "nameserver 127.0.0.11" >/etc/resolv.conf
step "an underlay bridge (fab) with etcd, and two node namespaces on it"
$IP netns add fab
$IP -n fab link add br0 type bridge
$IP -n fab addr add $ETCD_ADDR/24 dev br0
$IP -n fab link set br0 up
$IP -n fab link set lo up
for n in 1 2; do
    $IP netns add n$n
    $IP link add f$n netns fab type veth peer name eth0 netns n$n
    $IP -n fab link set f$n master br0 up
    $IP -n n$n addr add 192.168.100.1$n/24 dev eth0
    $IP -n n$n link set eth0 up
    $IP -n n$n link set lo up
done
nsenter --net=/run/netns/fab $ETCD --data-dir /tmp/etcd \
    --listen-client-urls http://$ETCD_ADDR:2379 --advertise-client-urls http://$ETCD_ADDR:2379 \
    --listen-peer-urls http://127.0.0.1:2380 >/tmp/etcd.log 2>&1 &
wait_for 30 "etcd" nsenter --net=/run/netns/fab $CURL -sf http://$ETCD_ADDR:2379/health

for n in 1 2; do
    mkdir -p /tmp/n$n
    nsenter --net=/run/netns/n$n $RM daemon --node-name n$n --advertise-addr 192.168.100.1$n \
        --store etcd://$ETCD_ADDR:2379 --lease-ttl 10 --dataplane nftables \
        --state-dir /tmp/n$n/state --run-dir /tmp/n$n/run --dns $ETCD_ADDR:53 \
        --ipsec-key-rotation 60 --log-level info >/tmp/n$n/daemon.log 2>&1 &
done
wait_for 60 "both daemons" sh -c "$RM --host /tmp/n1/run/routemesh.sock node ls | grep -c ready | grep -qx 2"
grep -q "IPsec ESP: available" /tmp/n1/daemon.log && ok "the daemon found ESP in this kernel" ||
    fail "the daemon did not find ESP: $(grep -i esp /tmp/n1/daemon.log | tail -n 3)"

step "an encrypted overlay, web on both nodes, a client task"
rm1 network create --driver overlay --opt encrypted sec >/dev/null || fail "network create --opt encrypted"
VNI=$(rm1 network ls | awk '$2 == "sec" {print $5}')
[ -n "$VNI" ] || fail "no VNI for sec"
rm1 service create --name web --replicas 2 --network sec -- routemesh whoami --port 80 >/dev/null ||
    fail "service create web"
rm1 service create --name client --network sec -- sleep 100000 >/dev/null || fail "client"
rm1 task ls
wait_for 30 "client.1 placed" sh -c "$RM --host /tmp/n1/run/routemesh.sock task ls | grep -Eq '^client\.1 +n[12] +running'"
CLIENT_NODE=$(rm1 task ls | awk '$1 == "client.1" {print $2}')
[ -n "$CLIENT_NODE" ] || fail "client.1 has no node"
CLIENT_NS=/tmp/$CLIENT_NODE/run/netns/task-client.1
VIP=$(rm1 service inspect web | sed -n 's/^VIPs *sec=//p')
[ -n "$VIP" ] || fail "no VIP for web"

step "IPsec state: SAs and policies between the two nodes"
wait_for 20 "ESP SAs on n1" sh -c "nsenter --net=/run/netns/n1 $IP xfrm state | grep -q 'rfc4106(gcm(aes))'"
st=$(nsenter --net=/run/netns/n1 $IP xfrm state)
echo "$st"
echo "$st" | grep -q 'mode transport' && ok "transport-mode SAs with rfc4106(gcm(aes))" || fail "no transport SA"
pol=$(nsenter --net=/run/netns/n1 $IP xfrm policy)
echo "$pol"
echo "$pol" | grep -q 'dport 4789' && echo "$pol" | grep -q 'proto esp' && echo "$pol" | grep -q 'mark 0x726d0e5b' &&
    ok "an out policy for marked VXLAN to the peer" || fail "no VXLAN policy"

step "HTTP across the encrypted overlay, with a capture on the underlay"
nsenter --net=/run/netns/fab $TCPDUMP -Z root -i f1 -nn -l 'esp' >/tmp/esp.txt 2>/tmp/tcpdump.err &
CAP1=$!
nsenter --net=/run/netns/fab $TCPDUMP -Z root -i f1 -nn -l "udp port 4789 and (udp[12:4] >> 8) = $VNI" \
    >/tmp/clear.txt 2>>/tmp/tcpdump.err &
CAP2=$!
sleep 1
wait_for 20 "web's VIP from the client" nsenter --net=$CLIENT_NS $CURL -sf --max-time 3 "http://$VIP/"
answered=$(nsenter --net=$CLIENT_NS $CURL -s --max-time 5 -H 'Connection: close' \
    $(i=0; while [ $i -lt 40 ]; do echo "http://$VIP/"; i=$((i + 1)); done) | grep -c '^Task: web\.')
[ "$answered" -eq 40 ] && ok "40 requests through web's VIP answered" || fail "$answered of 40 answered"
both=$(nsenter --net=$CLIENT_NS $CURL -s --max-time 5 -H 'Connection: close' \
    $(i=0; while [ $i -lt 40 ]; do echo "http://$VIP/"; i=$((i + 1)); done) | grep '^Task: ' | sort -u | wc -l)
[ "$both" -eq 2 ] && ok "both tasks (one on each node) answered" || fail "only $both tasks answered"
sleep 1
kill $CAP1 $CAP2 2>/dev/null
wait $CAP1 $CAP2 2>/dev/null
esp=$(grep -c 'ESP' /tmp/esp.txt)
clear=$(grep -c 'VXLAN\|4789' /tmp/clear.txt)
echo "underlay capture: $esp ESP packets, $clear cleartext VXLAN packets of VNI $VNI"
[ "$esp" -gt 0 ] && ok "the underlay carries ESP ($esp packets)" || fail "no ESP on the underlay"
[ "$clear" -eq 0 ] && ok "no cleartext VXLAN of the encrypted network on the underlay" ||
    fail "$clear cleartext VXLAN packets: $(head -n 3 /tmp/clear.txt)"

step "a key rotation during a request loop loses no request"
out_before=$(nsenter --net=/run/netns/n1 $IP xfrm state | awk '/^src 192.168.100.11 dst 192.168.100.12/ {getline; print $4}')
echo "n1 -> n2 SA before: $out_before"
rotated_at=""
# 10 requests a second until a whole rotation is over (due 60 s after the keyring was made,
# then two 5 s steps), at most 150 s.
fails=0; total=0
end=$(( $(cut -d. -f1 /proc/uptime) + 150 ))
while [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do
    total=$((total + 1))
    if ! nsenter --net=$CLIENT_NS $CURL -sf --max-time 2 "http://$VIP/" >/dev/null; then
        fails=$((fails + 1))
        echo "request $total failed at $(cut -d' ' -f1 /proc/uptime) s"
    fi
    # The keyring's second steady phase: the first rotation is over.
    if [ -z "$rotated_at" ] && [ "$(cat /tmp/n1/daemon.log /tmp/n2/daemon.log | grep -c 'keyring updated.*Steady')" -ge 2 ]; then
        rotated_at=$total
        end=$(( $(cut -d. -f1 /proc/uptime) + 5 ))
    fi
    sleep 0.1
done
out_after=$(nsenter --net=/run/netns/n1 $IP xfrm state | awk '/^src 192.168.100.11 dst 192.168.100.12/ {getline; print $4}')
echo "n1 -> n2 SA after: $out_after ($total requests, $fails failed)"
[ -n "$rotated_at" ] || fail "no rotation happened in 150 s"
[ -n "$out_after" ] && [ "$out_after" != "$out_before" ] && ok "the key rotated (SPI $out_before -> $out_after)" ||
    fail "the SA did not change: $out_before -> $out_after"
[ "$fails" -eq 0 ] && ok "no request lost during the rotation ($total requests)" ||
    fail "$fails of $total requests failed during the rotation"

echo "encrypted-overlay: $passed passed, 0 failed"
exit 0
