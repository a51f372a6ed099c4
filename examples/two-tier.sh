#!/usr/bin/env bash
# A two-tier app on one overlay: three web tasks and a client that calls each of them.
# Run against a running daemon (ROUTEMESH_HOST picks its socket).
set -euo pipefail
routemesh network create --driver overlay app
routemesh service create --name web --replicas 3 --network app -- routemesh whoami --port 80
routemesh service create --name client --network app -- sleep infinity
for ip in $(routemesh task ls --service web --format json | python3 -c '
import json,sys
print(" ".join(t["addresses"][0]["address"].split("/")[0] for t in json.load(sys.stdin)))'); do
  routemesh exec client.1 -- curl -s "http://$ip/"
done
