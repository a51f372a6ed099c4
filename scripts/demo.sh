#!/usr/bin/env bash
# The main job: `routemesh demo` — three nodes and etcd on this machine (each node a network
# namespace on an underlay bridge), an overlay, a service of three whoami replicas publishing
# 8080:80, and a curl loop from a client outside the cluster against every node, showing
# which task answered. Everything lives in namespaces it creates and is torn down at the end;
# pass --keep to leave it running (it prints how to reach it and how to remove it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
cargo build --quiet --locked --bin routemesh
exec target/debug/routemesh demo "$@"
