#!/usr/bin/env bash
# `make bench-e2b` (after `make install` and `make e2b-sdks`): the e2b-compatible API measured with
# the published e2b SDK, beside the airlock CLI (gRPC) and kubectl exec. Sets up a namespace
# (labelled airlock.dev/bench=true, deleted at the end), a ServiceAccount token, templates `warm`
# (with a pool of 3) and `cold`, a Sandbox `target`, and port-forwards to the gateway's gRPC and
# e2b ports on 127.0.0.1; then runs e2e/bench/e2b_bench.py. Report: bench/e2b-api/report.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
NS=bench-e2b-$RANDOM
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  kubectl delete namespace "$NS" --wait=false --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" airlock.dev/bench=true >/dev/null
kubectl -n "$NS" create serviceaccount agent >/dev/null
kubectl -n "$NS" create rolebinding agent --clusterrole=airlock-sandbox-editor --serviceaccount="$NS:agent" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: airlock.dev/v1alpha1
kind: SandboxTemplate
metadata: {name: warm, namespace: $NS}
spec: {image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, resources: {cpu: 50m, memory: 128Mi}}
---
apiVersion: airlock.dev/v1alpha1
kind: SandboxTemplate
metadata: {name: cold, namespace: $NS}
spec: {image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, resources: {cpu: 50m, memory: 128Mi}}
---
apiVersion: airlock.dev/v1alpha1
kind: SandboxPool
metadata: {name: warm, namespace: $NS}
spec: {templateRef: {name: warm}, replicas: 3}
---
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata: {name: target, namespace: $NS}
spec: {templateRef: {name: cold}, lifetime: {ttlSeconds: 3600}}
YAML
kubectl -n "$NS" wait --for=condition=Ready sbx/target --timeout=120s >/dev/null
kubectl -n "$NS" wait --for=jsonpath='{.status.readyReplicas}'=3 sbxp/warm --timeout=180s >/dev/null
kubectl -n airlock-system port-forward svc/airlock-exec-gateway 3000:3000 50051:50051 >/dev/null 2>&1 &
PIDS+=($!)
until curl -s -o /dev/null 127.0.0.1:3000; do sleep 0.2; done
TOKEN=$(kubectl -n "$NS" create token agent --audience airlock)
export E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 E2B_API_KEY=$TOKEN
export AIRLOCK_ADDR=http://127.0.0.1:50051 AIRLOCK_TOKEN=$TOKEN BENCH_NS=$NS
export PATH=${CARGO_TARGET_DIR:-$ROOT/target}/debug:$PATH
"$AIRLOCK_E2B_VENV/bin/python" e2e/bench/e2b_bench.py
