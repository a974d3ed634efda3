#!/usr/bin/env bash
# Builds Airlock's own images without a Docker engine and imports them into the local cluster's
# containerd: the static agent (scratch), the operator (binary + the shared libraries it links,
# plus the agent and airlock-boot for the agent ConfigMap) and the exec gateway, tagged with a
# content hash so a new build rolls the Deployments; and airlock.local/sandbox-python-agent:0.1.0,
# the sandbox image with the agent inside.
# Prints `TAG=<tag>` on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
T=${CARGO_TARGET_DIR:-$ROOT/target}
echo "==> building the agent and airlock-boot (static) and the operator and gateway binaries" >&2
# The agent: static, non-PIE, size-optimized (it travels compressed in a ConfigMap).
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build -q -p airlock-agent --target x86_64-unknown-linux-gnu --profile agent >&2
# airlock-boot: its own small workspace (no std, panic=abort); flags in agent/boot/.cargo.
(cd agent/boot && cargo build -q --release --target-dir "$T/boot") >&2
cargo build -q -p airlock-operator -p airlock-exec-gateway -p airlock-cli --bins >&2
AGENT=$T/x86_64-unknown-linux-gnu/agent/airlock-agent
BOOT=$T/boot/release/airlock-boot
OPERATOR=$T/debug/airlock-operator
GATEWAY=$T/debug/airlock-exec-gateway
CLI=$T/debug/airlock
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
for b in "$AGENT" "$BOOT" "$OPERATOR" "$GATEWAY"; do cp "$b" "$stage/"; strip "$stage/$(basename "$b")"; done
TAG=dev-$(cat "$stage"/* | sha256sum | cut -c1-12)
echo "==> images airlock.local/{agent,operator,exec-gateway}:$TAG" >&2
agent_root=$(mktemp -d); install -m 0755 "$stage/airlock-agent" "$agent_root/airlock-agent"
"$ROOT/e2e/cluster" image "airlock.local/agent:$TAG" "$agent_root" /airlock-agent
rm -rf "$agent_root"
# The operator image carries the agent bundle's two programs (--agent-boot, --agent-binary).
"$ROOT/e2e/cluster" image-bins "airlock.local/operator:$TAG" "$stage/airlock-operator" "$stage/airlock-agent" "$stage/airlock-boot"
"$ROOT/e2e/cluster" image-bins "airlock.local/exec-gateway:$TAG" "$stage/airlock-exec-gateway"
# A sandbox image that brings its own agent (Sandbox spec.agent: Image): the base sandbox image
# plus /.airlock/airlock-agent, as images built on Airlock's base images have it.
agent_layer=$(mktemp -d); install -D -m 0755 "$stage/airlock-agent" "$agent_layer/.airlock/airlock-agent"
"$ROOT/e2e/cluster" image "airlock.local/sandbox-python-agent:0.1.0" "$agent_layer" "" airlock.local/sandbox-python:0.1.0
rm -rf "$agent_layer"
echo "TAG=$TAG"
