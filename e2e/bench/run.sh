#!/usr/bin/env bash
# `make bench`: Airlock's benchmark suite against the local cluster (after `make install`).
#
# Builds and runs e2e/src/bin/bench/, which writes bench/report.md and bench/report.json (machine,
# versions, date; every figure a distribution p50/p90/p99/max/n; every comparison a ratio measured
# in the same run). Knobs (environment): BENCH_RUNS (default 20) scales every run count;
# BENCH_ONLY=operator,cold,ready,reap,exec,agent,warm,footprint runs a subset; BENCH_OUT (default bench)
# is the report directory. See the header of e2e/src/bin/bench/main.rs for the rest.
#
# Traffic stays on this machine: the API server, the cluster's pods, and the in-process gateway on
# 127.0.0.1. Every namespace the run creates is labelled airlock.dev/bench=true and deleted at the
# end, also when the run fails or is interrupted.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export KUBECONFIG=${KUBECONFIG:-/var/lib/airlock-cluster/pki/admin.kubeconfig}
T=${CARGO_TARGET_DIR:-$ROOT/target}

cleanup() {
  # The bench deletes what it made; this catches a run killed before it could.
  if command -v kubectl >/dev/null 2>&1; then
    kubectl delete namespace -l airlock.dev/bench=true --wait=false --ignore-not-found >/dev/null 2>&1 || true
    kubectl delete runtimeclass airlock-bench-unschedulable --ignore-not-found >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "==> building the bench (cargo build -p airlock-e2e --bin bench)"
cargo build -q -p airlock-e2e --bin bench
echo "==> running the benchmarks against the local cluster (KUBECONFIG=$KUBECONFIG)"
"$T/debug/bench" "$@" >/dev/null
echo "==> report: ${BENCH_OUT:-bench}/report.md, ${BENCH_OUT:-bench}/report.json"
