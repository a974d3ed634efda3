#!/usr/bin/env bash
# The demo: a Sandbox made through the gRPC gateway (authenticated with a Kubernetes ServiceAccount
# token), Python code run in it with its output streamed to this terminal, then `kubectl get sbx`.
# Expects `make install` to have run (the Makefile's `demo` target does that).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NS=airlock-demo
SYS=airlock-system
AIRLOCK=${CARGO_TARGET_DIR:-$ROOT/target}/debug/airlock
eval "$("$ROOT/e2e/cluster" env)"
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

step "namespace $NS and a ServiceAccount allowed to use sandboxes there (ordinary RBAC)"
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $NS}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: agent, namespace: $NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: agent-sandboxes, namespace: $NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: airlock-sandbox-editor}
subjects: [{kind: ServiceAccount, name: agent, namespace: $NS}]
YAML
# Minted for the gateway (chart default gateway.auth.tokenAudiences=[airlock]): useless against the API server.
export AIRLOCK_TOKEN=$(kubectl -n $NS create token agent --duration 1h --audience airlock)
export AIRLOCK_NAMESPACE=$NS

step "port-forwarding the gateway (svc/airlock-exec-gateway) to 127.0.0.1:50051"
kubectl -n $SYS port-forward svc/airlock-exec-gateway 50051:50051 >/tmp/airlock-demo-pf.log 2>&1 &
PF=$!
trap 'kill $PF 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null && break; sleep 0.2; done

step "airlock run: create a sandbox (gVisor), run Python, stream its output"
start=$(date +%s.%N)
"$AIRLOCK" run --image airlock.local/sandbox-python:0.1.0 --ttl 600 --keep --label demo=true -- python3 -c '
import platform, time
print("hello from a sandbox:", platform.python_version(), "on", platform.release())
for i in range(3):
    print("tick", i, flush=True); time.sleep(0.5)
print("2 + 2 =", 2 + 2)
'
printf '    (took %.1fs, including sandbox start)\n' "$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo 0)" >&2

step "kubectl get sbx -n $NS"
kubectl get sbx -n $NS -o wide

cat <<TXT

Next:
  export AIRLOCK_TOKEN=\$(kubectl -n $NS create token agent --audience airlock) AIRLOCK_NAMESPACE=$NS
  kubectl -n $SYS port-forward svc/airlock-exec-gateway 50051:50051 &
  $AIRLOCK list
  $AIRLOCK exec <sandbox> -- sh -c 'uname -a; id'
  $AIRLOCK cp ./file.txt <sandbox>:/tmp/file.txt && $AIRLOCK ls <sandbox>:/tmp
  kubectl apply -f - <<<'{"apiVersion":"airlock.dev/v1alpha1","kind":"Sandbox","metadata":{"name":"mine","namespace":"$NS"},"spec":{"image":"airlock.local/sandbox-python:0.1.0","lifetime":{"ttlSeconds":600}}}'
  kubectl wait -n $NS --for=condition=Ready sbx/mine
  make cluster-down      # stop the local cluster and remove its state
TXT
