#!/usr/bin/env bash
# Two routemesh nodes on etcd inside the VM (Debian's kernel has esp4), joined by an encrypted
# overlay: HTTP across, ESP and no cleartext VXLAN on the underlay, a key rotation that loses
# no request (vm/tests/encrypted-overlay.sh). Exits with the in-VM test's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
if ! command -v tcpdump >/dev/null || ! command -v etcd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends tcpdump etcd-server >&2
fi
cargo build --quiet --locked --bin routemesh
# ESP with AES-GCM (rfc4106) and its IV generator, and the XFRM netlink interface.
export VM_MODULES="${VM_MODULES:-} xfrm_user esp4 gcm ghash_generic ctr seqiv drbg"
export VM_MEM=${VM_MEM:-1536}
exec vm/run.sh vm/tests/encrypted-overlay.sh "$target_dir/debug/routemesh" \
    "$(command -v etcd)" "$(command -v tcpdump)"
