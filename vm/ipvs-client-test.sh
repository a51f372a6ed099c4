#!/usr/bin/env bash
# Builds the ipvs_smoke example and proves the routemesh-ipvs client against a real kernel's
# IPVS inside the VM (vm/run.sh). Exits with the in-VM test's exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --quiet -p routemesh-ipvs --example ipvs_smoke
exec vm/run.sh vm/tests/ipvs-client.sh "$target_dir/debug/examples/ipvs_smoke"
