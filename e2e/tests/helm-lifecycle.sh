#!/usr/bin/env bash
# The Helm release on the local cluster: installed, operator and gateway Ready; `helm uninstall`
# removes them and keeps the CRD (and the Sandboxes); installing again adopts the kept CRD.
# Expects `make install` to have run. Prints a closing line in the `N passed, N failed` form.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HELM=${HELM:?set by the Makefile}
NS=airlock-system
pass=0 fail=0
check() { if "${@:2}" >/dev/null 2>&1; then pass=$((pass+1)); echo "ok   - $1"; else fail=$((fail+1)); echo "FAIL - $1"; fi; }
ready() { [ "$(kubectl -n $NS get deploy "$1" -o jsonpath='{.status.readyReplicas}')" = "1" ]; }

check "operator Deployment Ready" ready airlock-operator
check "gateway Deployment Ready" ready airlock-exec-gateway
check "gateway Service has a ready endpoint (readiness is a gRPC health probe)" \
  kubectl -n $NS get endpoints airlock-exec-gateway -o jsonpath='{.subsets[0].addresses[0].ip}'
check "RuntimeClass admission policy and binding installed" \
  kubectl get validatingadmissionpolicy,validatingadmissionpolicybinding airlock-sandbox-runtime-class
kubectl create namespace helm-keep --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata: {name: survivor, namespace: helm-keep}
spec: {image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, lifetime: {ttlSeconds: 600}}
YAML
"$HELM" uninstall airlock -n $NS --wait --timeout 120s >/dev/null
check "operator Deployment removed" sh -c "! kubectl -n $NS get deploy airlock-operator"
check "gateway Deployment removed" sh -c "! kubectl -n $NS get deploy airlock-exec-gateway"
check "operator ClusterRole removed" sh -c "! kubectl get clusterrole airlock-operator"
check "admission policy removed" sh -c "! kubectl get validatingadmissionpolicy airlock-sandbox-runtime-class"
check "CRD kept after uninstall" kubectl get crd sandboxes.airlock.dev
check "Sandboxes kept after uninstall" kubectl -n helm-keep get sandbox survivor
kubectl delete namespace helm-keep --wait=false >/dev/null
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
