#!/bin/sh
# Runs inside the VM (see vm/README.md): proves routemesh-netdev's XFRM layer against a kernel
# with ESP, checking its work with iproute2's `ip xfrm` (an independent implementation).
#   host: vm/xfrm-test.sh
# Busybox runs its own applets before PATH: real tools are called by full path.

SMOKE=/files/xfrm_smoke
KTEST=/files/xfrm_kernel_test
IP=/usr/sbin/ip
REQID=1919746049 # routemesh_netdev::xfrm::REQID (0x726d0001)
NS=xfrm-smoke
passed=0

fail() {
    echo "FAIL: $*"
    echo "xfrm: $passed passed, 1 failed"
    exit 1
}

# has DESCRIPTION REGEX TEXT: TEXT has a line matching REGEX.
has() {
    printf '%s\n' "$3" | grep -Eq -- "$2" && passed=$((passed + 1)) && return 0
    printf '%s\n' "$3"
    fail "$1: no line matches /$2/"
}

# lacks DESCRIPTION REGEX TEXT: no line of TEXT matches REGEX.
lacks() {
    printf '%s\n' "$3" | grep -Eq -- "$2" || { passed=$((passed + 1)) && return 0; }
    printf '%s\n' "$3"
    fail "$1: a line matches /$2/"
}

step() { echo "== $*"; }

[ -x $SMOKE ] || fail "$SMOKE missing: pass the xfrm_smoke example binary to vm/run.sh"

step "ESP is there: iproute2 can add an rfc4106(gcm(aes)) SA"
$IP netns add xfrm-oracle || fail "ip netns add"
$IP -n xfrm-oracle xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x1000 \
    mode transport aead 'rfc4106(gcm(aes))' 0x000102030405060708090a0b0c0d0e0f10111213 128 ||
    fail "ip xfrm state add: this kernel cannot do ESP with AES-GCM"
passed=$((passed + 1))
$IP netns del xfrm-oracle

step "apply: 2 SAs + 1 policy, read back (in namespace $NS)"
$IP netns add $NS || fail "ip netns add $NS"
$SMOKE apply /run/netns/$NS || fail "xfrm_smoke apply"
out=$($IP xfrm state) || fail "ip xfrm state"
lacks "nothing in the initial namespace" '^src ' "$out"
out=$($IP -n $NS xfrm state) || fail "ip xfrm state"
echo "$out"
has "SA 10.50.0.1 -> 10.50.0.2" '^src 10\.50\.0\.1 dst 10\.50\.0\.2$' "$out"
has "SA 10.50.0.2 -> 10.50.0.1" '^src 10\.50\.0\.2 dst 10\.50\.0\.1$' "$out"
has "first SA's spi and reqid" "proto esp spi 0x00001001 reqid $REQID mode transport" "$out"
has "second SA's spi and reqid" "proto esp spi 0x00002001 reqid $REQID mode transport" "$out"
has "AES-GCM with the first key" \
    'aead rfc4106\(gcm\(aes\)\) 0x000102030405060708090a0b0c0d0e0f10111213 128' "$out"
has "AES-GCM with the second key" \
    'aead rfc4106\(gcm\(aes\)\) 0xa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3 128' "$out"
has "mode transport" 'mode transport' "$out"
has "replay window 32" 'replay-window 32' "$out"
count=$(printf '%s\n' "$out" | grep -c '^src ')
[ "$count" = 2 ] || fail "ip xfrm state lists $count SAs, expected 2"
passed=$((passed + 1))
out=$($IP -n $NS xfrm policy) || fail "ip xfrm policy"
echo "$out"
has "policy selector" '^src 10\.50\.0\.1/32 dst 10\.50\.0\.2/32 proto udp dport 4789' "$out"
has "policy direction" 'dir out priority 0' "$out"
has "policy mark" 'mark 0xe110001/0xffffffff' "$out"
has "policy template" 'tmpl src 10\.50\.0\.1 dst 10\.50\.0\.2' "$out"
has "template ESP transport reqid" "proto esp reqid $REQID mode transport" "$out"

step "all: apply, rotate (new SA before old deleted), flush"
$SMOKE all /run/netns/$NS || fail "xfrm_smoke all"
passed=$((passed + 1))
out=$($IP -n $NS xfrm state) || fail "ip xfrm state"
lacks "no SA left after flush" '^src ' "$out"
out=$($IP -n $NS xfrm policy) || fail "ip xfrm policy"
lacks "no policy left after flush" '^src ' "$out"

step "traffic: a marked VXLAN-port datagram goes through ESP, an unmarked one does not"
$IP netns add xa || fail "ip netns add xa"
$IP netns add xb || fail "ip netns add xb"
$IP -n xa link add va type veth peer name vb netns xb || fail "veth"
$IP -n xa addr add 10.51.0.1/24 dev va && $IP -n xa link set va up && $IP -n xa link set lo up ||
    fail "address xa"
$IP -n xb addr add 10.51.0.2/24 dev vb && $IP -n xb link set vb up && $IP -n xb link set lo up ||
    fail "address xb"
$SMOKE traffic /run/netns/xa /run/netns/xb || fail "xfrm_smoke traffic"
passed=$((passed + 1))
out=$($IP -s -n xa xfrm state get src 10.51.0.1 dst 10.51.0.2 proto esp spi 0x00003001) ||
    fail "ip xfrm state get in xa"
echo "$out"
has "A encrypted exactly one datagram" '^[[:space:]]+[0-9]+\(bytes\), 1\(packets\)' "$out"
out=$($IP -s -n xb xfrm state get src 10.51.0.1 dst 10.51.0.2 proto esp spi 0x00003001) ||
    fail "ip xfrm state get in xb"
echo "$out"
has "B decrypted exactly one datagram" '^[[:space:]]+[0-9]+\(bytes\), 1\(packets\)' "$out"
out=$($IP -s -n xb xfrm state get src 10.51.0.2 dst 10.51.0.1 proto esp spi 0x00003002) ||
    fail "ip xfrm state get in xb"
has "nothing went back B to A" '^[[:space:]]+0\(bytes\), 0\(packets\)' "$out"

if [ -x $KTEST ]; then
    step "the netdev xfrm kernel test, on a kernel with ESP"
    out=$($KTEST --test-threads 1 --nocapture 2>&1)
    rc=$?
    echo "$out"
    [ $rc = 0 ] || fail "xfrm kernel test failed"
    has "esp_supported() is true here" 'esp_supported\(\) = true; ip xfrm state add: ok=true' "$out"
    lacks "the SA test ran" 'SKIPPED' "$out"
    has "all kernel tests passed" '^test result: ok\. 5 passed' "$out"
fi

echo "xfrm: $passed passed, 0 failed"
