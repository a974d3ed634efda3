#!/usr/bin/env bash
# Builds Airlock's own images without a Docker engine and imports them into the local cluster's
# containerd: the static agent (scratch), the operator (binary + the shared libraries it links,
# plus the agent and airlock-boot for the agent ConfigMap) and the exec gateway, tagged with a
# content hash so a new build rolls the Deployments; airlock.local/sandbox-python-agent:0.1.0,
# the sandbox image with the agent inside; and airlock.local/sandbox-node:0.1.0 (Node.js).
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
# The operator and gateway: the tests' own debug build (one build for tests and images), or with
# AIRLOCK_PROFILE=release an optimized one (`make bench-scale`: memory and CPU figures of what
# users run).
PROFILE=${AIRLOCK_PROFILE:-dev}
case $PROFILE in dev) OUT=debug ;; *) OUT=$PROFILE ;; esac
cargo build -q -p airlock-operator -p airlock-exec-gateway -p airlock-cli --bins --profile "$PROFILE" >&2
AGENT=$T/x86_64-unknown-linux-gnu/agent/airlock-agent
BOOT=$T/boot/release/airlock-boot
OPERATOR=$T/$OUT/airlock-operator
GATEWAY=$T/$OUT/airlock-exec-gateway
CLI=$T/$OUT/airlock
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
# A sandbox image with Node.js for RunCode NODE (tests/gateway_promises.rs): Debian's nodejs on
# the sandbox base, built once (mmdebstrap ~70 s, the archive ~55 s, ~100 MB) and kept in the
# cache under the hash of its package list; imported when containerd lacks it.
node_pkgs="python3-minimal,procps,ca-certificates,nodejs"
node_tar=${AIRLOCK_CACHE:-/var/cache/airlock}/images/sandbox-node-$(echo "bookworm $node_pkgs v1" | sha256sum | cut -c1-12).tar
if [ ! -f "$node_tar" ]; then
  echo "==> building airlock.local/sandbox-node:0.1.0 with mmdebstrap (first run only)" >&2
  node_root=$(mktemp -d)
  mmdebstrap --quiet --mode=root --variant=minbase --include="$node_pkgs" \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' bookworm "$node_root" >&2
  rm -rf "$node_root/var/cache/apt/archives"/*.deb "$node_root/var/lib/apt/lists"/*
  mkdir -p "$(dirname "$node_tar")"
  python3 "$ROOT/e2e/lib/mkimg.py" airlock.local/sandbox-node:0.1.0 "$node_tar.tmp" "$node_root" --cmd /bin/sh >/dev/null
  mv "$node_tar.tmp" "$node_tar"; rm -rf "$node_root"
fi
"$ROOT/e2e/cluster" import airlock.local/sandbox-node:0.1.0 "$node_tar"
echo "TAG=$TAG"
