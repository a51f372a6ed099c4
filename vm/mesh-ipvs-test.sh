#!/usr/bin/env bash
# The routing-mesh scenario with --dataplane ipvs, inside a VM whose kernel has IPVS
# (vm/run.sh). Exits with the in-VM test's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --quiet --locked --bin routemesh
exec vm/run.sh vm/tests/mesh-ipvs.sh "$target_dir/debug/routemesh"
