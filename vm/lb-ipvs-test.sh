#!/usr/bin/env bash
# The IPVS backend of the lb crate against a real kernel's IPVS, inside the VM (vm/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
cargo build --quiet --locked -p routemesh-lb --example ipvs_lb_smoke
exec vm/run.sh vm/tests/lb-ipvs.sh "$target_dir/debug/examples/ipvs_lb_smoke"
