#!/bin/sh
# Runs inside the VM (see vm/README.md): proves the routemesh-ipvs client against the kernel's
# IPVS, step by step, checking every step with ipvsadm (an independent implementation).
#   host: vm/run.sh vm/tests/ipvs-client.sh "$CARGO_TARGET_DIR"/debug/examples/ipvs_smoke
# Busybox runs its own applets before PATH: real tools are called by full path.

SMOKE=/files/ipvs_smoke
IPVSADM=/usr/sbin/ipvsadm
IP=/usr/sbin/ip
NS=ipvs-smoke
MARK=260
passed=0

fail() {
    echo "FAIL: $*"
    echo "ipvs-client: $passed passed, 1 failed"
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

[ -x $SMOKE ] || fail "$SMOKE missing: pass the ipvs_smoke example binary to vm/run.sh"

step "create fwmark $MARK (rr) with two masquerading destinations, and address services"
$SMOKE add $MARK || fail "ipvs_smoke add"
out=$($IPVSADM -Ln) || fail "ipvsadm -Ln"
echo "$out"
has "fwmark service" "^FWM +$MARK rr" "$out"
has "first destination" '^ +-> 10\.0\.0\.5:80 +Masq +1 ' "$out"
has "second destination" '^ +-> 10\.0\.0\.6:80 +Masq +1 ' "$out"
has "TCP service" '^TCP +10\.1\.0\.1:8080 wrr' "$out"
has "weighted destination" '^ +-> 10\.0\.0\.7:8080 +Masq +3 ' "$out"
has "IPv6 UDP service, scheduler changed to sh" '^UDP +\[fd00::1\]:53 sh' "$out"
has "IPv6 direct-routing destination" '^ +-> \[fd00::5\]:5353 +Route +1 ' "$out"
out=$($IPVSADM -Ln --thresholds) || fail "ipvsadm -Ln --thresholds"
has "thresholds" '^ +-> 10\.0\.0\.7:8080 +100 +10 ' "$out"

step "adding the same service and destination again fails with EEXIST"
out=$($SMOKE add-again $MARK) || fail "ipvs_smoke add-again"
echo "$out"
has "service error message" "^expected error: adding service fwmark $MARK: File exists$" "$out"
has "destination error message" \
    "^expected error: adding destination 10\.0\.0\.5:80 to fwmark $MARK: File exists$" "$out"

step "a service made by ipvsadm reads back through the client"
$IPVSADM -A -t 10.2.0.1:443 -s sh -p 300 || fail "ipvsadm -A"
$IPVSADM -a -t 10.2.0.1:443 -r 10.0.0.9:443 -m -w 5 || fail "ipvsadm -a"
out=$($SMOKE dump) || fail "ipvs_smoke dump"
echo "$out"
has "persistent service" \
    '^service TCP 10\.2\.0\.1:443 sh flags=0x1 timeout=300 netmask=0xffffffff' "$out"
has "its destination" '^  dest 10\.0\.0\.9:443 Masq weight=5 upper=0 lower=0' "$out"
has "fwmark service" "^service fwmark $MARK rr flags=0x0 timeout=0 netmask=0xffffffff" "$out"
has "IPv6 service" '^service UDP \[fd00::1\]:53 sh flags=0x0 timeout=0 netmask=0x80' "$out"
has "IPv6 destination" '^  dest \[fd00::5\]:5353 Route weight=1' "$out"

step "drain 10.0.0.6:80 with weight 0"
$SMOKE weight $MARK 10.0.0.6:80 0 || fail "ipvs_smoke weight"
out=$($IPVSADM -Ln) || fail "ipvsadm -Ln"
has "drained destination" '^ +-> 10\.0\.0\.6:80 +Masq +0 ' "$out"
has "other destination untouched" '^ +-> 10\.0\.0\.5:80 +Masq +1 ' "$out"

step "timeouts"
$SMOKE timeouts 7200 120 300 || fail "ipvs_smoke timeouts"
out=$($IPVSADM -L --timeout) || fail "ipvsadm -L --timeout"
echo "$out"
has "timeouts" '^Timeout \(tcp tcpfin udp\): 7200 120 300$' "$out"

step "delete 10.0.0.6:80, dump and compare"
$SMOKE delete-dest $MARK 10.0.0.6:80 || fail "ipvs_smoke delete-dest"
out=$($IPVSADM -Ln) || fail "ipvsadm -Ln"
lacks "deleted destination" '10\.0\.0\.6:80' "$out"
has "remaining destination" '^ +-> 10\.0\.0\.5:80 +Masq +1 ' "$out"

step "a client opened in another namespace programs that namespace only"
$IP netns add $NS || fail "ip netns add"
$SMOKE netns /run/netns/$NS 77 || fail "ipvs_smoke netns"
out=$($IP netns exec $NS $IPVSADM -Ln) || fail "ipvsadm in $NS"
has "service in $NS" '^FWM +77 rr' "$out"
lacks "$NS has only its own services" "^FWM +$MARK " "$out"
out=$($IPVSADM -Ln) || fail "ipvsadm -Ln"
lacks "the initial namespace does not see it" '^FWM +77 ' "$out"
$IP netns del $NS

step "400 more services: dumps that span many datagrams"
$SMOKE many 400 || fail "ipvs_smoke many"
count=$($IPVSADM -Ln | grep -c '^FWM ')
[ "$count" = 401 ] || fail "ipvsadm lists $count fwmark services, expected 401"
passed=$((passed + 1))

step "flush"
$SMOKE flush || fail "ipvs_smoke flush"
out=$($IPVSADM -Ln) || fail "ipvsadm -Ln"
lacks "no services after flush" '^(TCP|UDP|FWM|SCTP) ' "$out"

echo "ipvs-client: $passed passed, 0 failed"
