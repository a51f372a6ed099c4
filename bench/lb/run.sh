#!/bin/sh
# Benchmark of routemesh-lb's nftables backend (root; makes and removes its own namespaces):
# port VIPs (the baseline), address-only VIPs and published ports side by side; then one
# element change with 10,000 services loaded over netlink, `nft -f` and the nftables crate
# (JSON), and the full resync.
# Usage: bench/lb/run.sh [seconds per connection-rate sample, default 3]
#        bench/lb/run.sh elements    (only the element-change comparison, ~30 s)
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -q -p routemesh-lb --example nft_bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/nft_bench" "${1:-3}"
