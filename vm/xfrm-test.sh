#!/usr/bin/env bash
# Builds the xfrm_smoke example and the netdev xfrm kernel test, and proves the
# routemesh-netdev XFRM (IPsec) layer inside the VM (vm/run.sh), whose Debian kernel has ESP
# (the development machine's has not). Exits with the in-VM test's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --quiet -p routemesh-netdev --example xfrm_smoke
# The same kernel test as on the host (netdev/tests/xfrm.rs): in the VM its SA test runs too.
test_bin=$(cargo test --quiet -p routemesh-netdev --test xfrm --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -x $test_bin ]] || { echo "vm/xfrm-test.sh: no xfrm test binary" >&2; exit 1; }
files=$(mktemp -d)
trap 'rm -rf "$files"' EXIT
cp "$test_bin" "$files/xfrm_kernel_test"
# ESP with rfc4106(gcm(aes)) and the XFRM netlink interface; the crypto templates are loaded
# up front because the VM has no /sbin/modprobe for the kernel to request them with (seqiv
# needs the default RNG, drbg).
export VM_MODULES="${VM_MODULES:-} xfrm_user esp4 gcm ctr ghash_generic seqiv echainiv drbg"
vm/run.sh vm/tests/xfrm.sh "$target_dir/debug/examples/xfrm_smoke" "$files/xfrm_kernel_test"
