#!/bin/sh
# Benchmark of routemesh-lb's nftables backend (root; makes and removes its own namespaces).
# Usage: bench/lb/run.sh [seconds per connection-rate sample, default 3]
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -q -p routemesh-lb --example nft_bench
exec target/release/examples/nft_bench "${1:-3}"
