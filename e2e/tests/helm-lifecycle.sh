#!/usr/bin/env bash
# The Helm release on the local cluster: installed, operator and gateway Ready; `helm uninstall`
# removes them and keeps the CRD (and the Sandboxes); installing again adopts the kept CRD (the
# same object, now owned by the release again) and the Sandboxes are still there. Ends with the
# release installed again, with the images it had. Expects `make install` to have run. Prints a
# closing line in the `N passed, N failed` form.
# Sourced (`. e2e/tests/helm-lifecycle.sh`), it only defines its check functions, to try them by
# hand against a state of one's choosing.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELM=${HELM:?set by the Makefile}
NS=airlock-system
CRD=sandboxes.airlock.dev
pass=0 fail=0
check() { if "${@:2}" >/dev/null 2>&1; then pass=$((pass+1)); echo "ok   - $1"; else fail=$((fail+1)); echo "FAIL - $1"; fi; }
ready() { [ "$(kubectl -n $NS get deploy "$1" -o jsonpath='{.status.readyReplicas}')" = "1" ]; }
# ready_endpoint SERVICE [NAMESPACE]: an EndpointSlice of the Service lists an address whose
# condition is ready (an empty or missing list fails: jsonpath alone exits 0 on missing keys).
ready_endpoint() {
  local out
  out=$(kubectl -n "${2:-$NS}" get endpointslices -l "kubernetes.io/service-name=$1" \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}') || return 1
  [ -n "$out" ]
}
uid() { kubectl get "$@" -o jsonpath='{.metadata.uid}'; } # RESOURCE...: its uid (empty if none)
# same_uid UID RESOURCE...: the resource exists and is still the object with that uid.
same_uid() { local now; now=$(uid "${@:2}") || return 1; [ -n "$1" ] && [ "$now" = "$1" ]; }
# helm_owned RESOURCE...: carries the ownership metadata Helm adopts (and leaves) on a resource of
# release airlock in airlock-system.
helm_owned() {
  [ "$(kubectl get "$@" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" = airlock ] &&
    [ "$(kubectl get "$@" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-namespace}')" = "$NS" ] &&
    [ "$(kubectl get "$@" -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')" = Helm ]
}
adopted() { same_uid "$@" && helm_owned "${@:2}"; } # UID RESOURCE...: the same object, Helm's
deployed() { "$HELM" list -n $NS --deployed -q | grep -qx airlock; } # the release is deployed
# reinstall TAG: installs the release as the Makefile's `install` target does (adoption metadata
# on the kept cluster-scoped objects, then `helm upgrade --install` with the local values), with
# the images of tag TAG (already imported).
reinstall() {
  local r
  [ -n "$1" ] || { echo "no image tag" >&2; return 1; }
  for r in crd/$CRD priorityclass/airlock-sandbox; do
    kubectl get $r >/dev/null 2>&1 || continue
    kubectl label --overwrite $r app.kubernetes.io/managed-by=Helm >/dev/null || return 1
    kubectl annotate --overwrite $r meta.helm.sh/release-name=airlock meta.helm.sh/release-namespace=$NS >/dev/null || return 1
  done
  "$HELM" upgrade --install airlock "$ROOT/charts/airlock" -n $NS -f "$ROOT/e2e/values-local.yaml" \
    --set image.tag="$1" --set agentImage="airlock.local/agent:$1" --wait --timeout 180s
}
[ "${BASH_SOURCE[0]}" != "$0" ] && return 0

check "operator Deployment Ready" ready airlock-operator
check "gateway Deployment Ready" ready airlock-exec-gateway
check "gateway Service has a ready endpoint (readiness is a gRPC health probe)" ready_endpoint airlock-exec-gateway
check "admission policies and bindings installed (RuntimeClasses, agent bundle)" \
  kubectl get validatingadmissionpolicy,validatingadmissionpolicybinding airlock-sandbox-runtime-class airlock-agent-bundle
kubectl create namespace helm-keep --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata: {name: survivor, namespace: helm-keep}
spec: {image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, lifetime: {ttlSeconds: 600}}
YAML
# What installing again needs and compares against: the images in use, the CRD and the Sandbox.
image=$(kubectl -n $NS get deploy airlock-operator -o jsonpath='{.spec.template.spec.containers[0].image}')
tag=${image##*:}
crd_uid=$(uid crd $CRD)
survivor_uid=$(uid -n helm-keep sandbox survivor)
"$HELM" uninstall airlock -n $NS --wait --timeout 120s >/dev/null
check "operator Deployment removed" sh -c "! kubectl -n $NS get deploy airlock-operator"
check "gateway Deployment removed" sh -c "! kubectl -n $NS get deploy airlock-exec-gateway"
check "operator ClusterRole removed" sh -c "! kubectl get clusterrole airlock-operator"
check "admission policies removed" sh -c "! kubectl get validatingadmissionpolicy airlock-sandbox-runtime-class && ! kubectl get validatingadmissionpolicy airlock-agent-bundle"
check "CRD kept after uninstall" same_uid "$crd_uid" crd $CRD
check "Sandboxes kept after uninstall" same_uid "$survivor_uid" -n helm-keep sandbox survivor
check "installing again (as make install, images '$tag') succeeds" reinstall "$tag"
check "the release is deployed again" deployed
check "operator Deployment Ready again" ready airlock-operator
check "gateway Deployment Ready again" ready airlock-exec-gateway
check "the CRD is the kept object (uid $crd_uid), adopted: Helm's ownership metadata" adopted "$crd_uid" crd $CRD
check "the Sandbox kept through uninstall still exists (uid $survivor_uid)" same_uid "$survivor_uid" -n helm-keep sandbox survivor
kubectl delete namespace helm-keep --wait=false >/dev/null
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
