#!/usr/bin/env bash
# Builds Airlock's own images without a Docker engine and imports them into the local cluster's
# containerd: the static agent (scratch), the operator and the exec gateway (binary + the shared
# libraries it links). Tags are content hashes, so a new build rolls the Deployments.
# Prints `TAG=<tag>` on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
T=${CARGO_TARGET_DIR:-$ROOT/target}
echo "==> building the agent (static) and the operator and gateway binaries" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build -q -p airlock-agent --target x86_64-unknown-linux-gnu >&2
cargo build -q -p airlock-operator -p airlock-exec-gateway --bins >&2
AGENT=$T/x86_64-unknown-linux-gnu/debug/airlock-agent
OPERATOR=$T/debug/airlock-operator
GATEWAY=$T/debug/airlock-exec-gateway
CLI=$T/debug/airlock
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
for b in "$AGENT" "$OPERATOR" "$GATEWAY"; do cp "$b" "$stage/"; strip "$stage/$(basename "$b")"; done
TAG=dev-$(cat "$stage"/* | sha256sum | cut -c1-12)
echo "==> images airlock.local/{agent,operator,exec-gateway}:$TAG" >&2
agent_root=$(mktemp -d); install -m 0755 "$stage/airlock-agent" "$agent_root/airlock-agent"
"$ROOT/e2e/cluster" image "airlock.local/agent:$TAG" "$agent_root" /airlock-agent
rm -rf "$agent_root"
"$ROOT/e2e/cluster" image-bins "airlock.local/operator:$TAG" "$stage/airlock-operator"
"$ROOT/e2e/cluster" image-bins "airlock.local/exec-gateway:$TAG" "$stage/airlock-exec-gateway"
echo "TAG=$TAG"
