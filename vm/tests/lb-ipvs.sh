#!/bin/sh
# Runs inside the VM (see vm/README.md): the routemesh-lb IPVS backend against the kernel's
# IPVS. The ipvs_lb_smoke example builds client/lb/backend namespaces, programs an
# address-only VIP, a VIP with a port and a published port through IpvsBackend, and checks
# with ipvsadm and real connections (spread, draining, removal, refusal without backend,
# timeouts, idle drop). This script counts its checks and adds a few of its own.
#   host: cargo build -p routemesh-lb --example ipvs_lb_smoke
#         vm/run.sh vm/tests/lb-ipvs.sh "$CARGO_TARGET_DIR"/debug/examples/ipvs_lb_smoke
# Busybox runs its own applets before PATH: real tools are called by full path.

SMOKE=/files/ipvs_lb_smoke
NFT=/usr/sbin/nft
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

finish() {
    echo "lb-ipvs: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit $?
}

if [ ! -x $SMOKE ]; then
    bad "$SMOKE missing: pass the ipvs_lb_smoke example binary to vm/run.sh"
    finish
fi
$NFT --version >/dev/null 2>&1 && ok "nft present" || bad "nft missing"

out=$($SMOKE 2>&1)
rc=$?
echo "$out"
n_ok=$(printf '%s\n' "$out" | grep -c '^ok: ')
n_fail=$(printf '%s\n' "$out" | grep -c '^FAIL: ')
passed=$((passed + n_ok))
failed=$((failed + n_fail))
[ "$rc" = 0 ] && ok "ipvs_lb_smoke exited 0" || bad "ipvs_lb_smoke exited $rc"
[ "$n_ok" -ge 30 ] && ok "ipvs_lb_smoke ran its checks ($n_ok)" || bad "only $n_ok checks ran"
printf '%s\n' "$out" | grep -q '^ipvs_lb_smoke: [0-9]* passed, 0 failed$' \
    && ok "summary line" || bad "no clean summary line"

# Nothing of the test is left behind in the initial namespace.
/usr/sbin/ipvsadm -Ln | grep -q '^FWM' && bad "FWM services leaked into the initial namespace" \
    || ok "initial namespace has no FWM services"
[ -e /run/netns/lb ] && bad "namespace lb left behind" || ok "namespaces removed"

finish
