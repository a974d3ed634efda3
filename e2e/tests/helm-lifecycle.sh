#!/usr/bin/env bash
# The Helm release on the local cluster: installed, operator and gateway Ready; `helm uninstall`
# removes them and keeps the CRD (and the Sandboxes). Then, with the CRD managed by hand (Helm's
# ownership metadata and keep policy removed), a release with `crds.enabled=false` and
# `agentDelivery: InitContainer` is installed and uninstalled: it leaves the CRD exactly as it was
# (same uid and resourceVersion, not adopted, not deleted), and its sandboxes get the agent from an
# init container and run commands through the gateway. Installing again as `make install` adopts
# the kept CRD (the same object, owned by the release again) and the Sandboxes are still there.
# Ends with the release installed again, with the images it had. Expects `make install` to have
# run. Prints a closing line in the `N passed, N failed` form.
# Sourced (`. e2e/tests/helm-lifecycle.sh`), it only defines its check functions, to try them by
# hand against a state of one's choosing.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELM=${HELM:?set by the Makefile}
GRPCURL=${GRPCURL:-grpcurl}
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
# not_helm_owned RESOURCE...: carries none of the metadata by which Helm owns or keeps it.
not_helm_owned() {
  [ -z "$(kubectl get "$@" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}{.metadata.annotations.meta\.helm\.sh/release-namespace}{.metadata.annotations.helm\.sh/resource-policy}{.metadata.labels.app\.kubernetes\.io/managed-by}')" ]
}
both_ready() { ready airlock-operator && ready airlock-exec-gateway; }
keep_policy() { [ "$(kubectl get "$@" -o jsonpath='{.metadata.annotations.helm\.sh/resource-policy}')" = keep ]; }
rv() { kubectl get "$@" -o jsonpath='{.metadata.resourceVersion}'; } # RESOURCE...: resourceVersion
# untouched UID RV RESOURCE...: the same object (uid), not written since (resourceVersion).
untouched() { same_uid "$1" "${@:3}" && [ -n "$2" ] && [ "$(rv "${@:3}")" = "$2" ]; }
# by_hand: takes Helm's ownership metadata and keep policy off the CRD, as if it had been applied
# with `kubectl apply -f crds/sandbox.yaml`: a release that owned it would now delete it on uninstall.
by_hand() {
  kubectl label crd $CRD app.kubernetes.io/managed-by- >/dev/null &&
    kubectl annotate crd $CRD meta.helm.sh/release-name- meta.helm.sh/release-namespace- helm.sh/resource-policy- >/dev/null
}
# install_without_crd TAG: installs the release with crds.enabled=false and the init-container agent
# delivery (no adoption metadata put on anything first).
install_without_crd() {
  "$HELM" upgrade --install airlock "$ROOT/charts/airlock" -n $NS -f "$ROOT/e2e/values-local.yaml" \
    --set image.tag="$1" --set agentImage="airlock.local/agent:$1" \
    --set crds.enabled=false --set agentDelivery=InitContainer --wait --timeout 180s
}
no_crd_in_release() { ! "$HELM" get manifest airlock -n $NS | grep -q '^kind: CustomResourceDefinition$'; }
operator_arg() { kubectl -n $NS get deploy airlock-operator -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q -- "\"$1\""; }
# pod_field NS POD JSONPATH: a field of a pod.
pod_field() { kubectl -n "$1" get pod "$2" -o jsonpath="$3"; }
# init_delivery POD TAG: the pod got the agent from init container airlock-install (image
# airlock.local/agent:TAG) into its memory volume, mounts no agent ConfigMap, and the agent is PID 1.
init_delivery() {
  [ "$(pod_field helm-keep "$1" '{.spec.initContainers[*].name}')" = airlock-install ] &&
    [ "$(pod_field helm-keep "$1" '{.spec.initContainers[0].image}')" = "airlock.local/agent:$2" ] &&
    [ "$(pod_field helm-keep "$1" '{.status.initContainerStatuses[0].state.terminated.exitCode}')" = 0 ] &&
    [ -z "$(pod_field helm-keep "$1" '{.spec.volumes[*].configMap.name}')" ] &&
    case "$(kubectl -n helm-keep exec "$1" -- cat /proc/1/cmdline | tr '\0' ' ')" in
      "/.airlock/airlock-agent init --listen 0.0.0.0:7070 --fence-probe="*":8080 -- ") true ;;
      *) false ;;
    esac
}
# bundle_delivery POD: the pod (made under the default delivery) has no init container and mounts
# the namespace's agent ConfigMap.
bundle_delivery() {
  [ -z "$(pod_field helm-keep "$1" '{.spec.initContainers}')" ] &&
    pod_field helm-keep "$1" '{.spec.volumes[*].configMap.name}' | grep -q '^airlock-agent-'
}
# gateway_exec SANDBOX: `echo init-delivery-ok` through the installed gateway (pod IP over the
# bridge), as ServiceAccount helm-keep/agent with the chart's editor role; retried while the new
# RoleBinding reaches the authorizer (a denial is cached for 10 s).
gateway_exec() {
  local ip token out i
  ip=$(kubectl -n $NS get pod -l app.kubernetes.io/component=exec-gateway,app.kubernetes.io/instance=airlock \
    -o jsonpath='{.items[0].status.podIP}') || return 1
  token=$(kubectl -n helm-keep create token agent --audience airlock) || return 1
  for i in $(seq 60); do
    out=$("$GRPCURL" -plaintext -max-time 60 -H "authorization: Bearer $token" \
      -d "{\"sandbox\": {\"namespace\": \"helm-keep\", \"name\": \"$1\"}, \"argv\": {\"args\": [\"sh\", \"-c\", \"echo init-delivery-ok\"]}}" \
      "$ip:50051" airlock.v1.Processes/Exec 2>&1)
    # stdout "init-delivery-ok\n", base64; then the exit event.
    if grep -q '"stdout": "aW5pdC1kZWxpdmVyeS1vawo="' <<<"$out" && grep -q '"exited"' <<<"$out"; then return 0; fi
    grep -q 'PermissionDenied\|Unauthenticated' <<<"$out" || { echo "$out" >&2; return 1; }
    sleep 1
  done
  echo "$out" >&2
  return 1
}
[ "${BASH_SOURCE[0]}" != "$0" ] && return 0

# What installing again needs: the images in use. Without an installed release to start from
# there is nothing to put back at the end: stop here.
image=$(kubectl -n $NS get deploy airlock-operator -o jsonpath='{.spec.template.spec.containers[0].image}')
tag=${image##*:}
[ -n "$image" ] && deployed || { echo "FAIL - no deployed release airlock to start from (make install)"; echo "0 passed, 1 failed"; exit 1; }
check "operator Deployment Ready" ready airlock-operator
check "gateway Deployment Ready" ready airlock-exec-gateway
check "gateway Service has a ready endpoint (readiness is a gRPC health probe)" ready_endpoint airlock-exec-gateway
check "admission policies and bindings installed (RuntimeClasses, agent bundle)" \
  kubectl get validatingadmissionpolicy,validatingadmissionpolicybinding airlock-sandbox-runtime-class airlock-agent-bundle
kubectl wait --for=delete namespace/helm-keep --timeout=180s >/dev/null 2>&1 # from an earlier run
kubectl create namespace helm-keep --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata: {name: survivor, namespace: helm-keep}
spec: {image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, lifetime: {ttlSeconds: 600}}
YAML
check "a Sandbox made under the installed release becomes Ready" \
  kubectl -n helm-keep wait --for=condition=Ready sandbox/survivor --timeout=180s
# What installing again compares against: the CRD and the Sandbox.
crd_uid=$(uid crd $CRD)
survivor_uid=$(uid -n helm-keep sandbox survivor)
"$HELM" uninstall airlock -n $NS --wait --timeout 120s >/dev/null
check "operator Deployment removed" sh -c "! kubectl -n $NS get deploy airlock-operator"
check "gateway Deployment removed" sh -c "! kubectl -n $NS get deploy airlock-exec-gateway"
check "operator ClusterRole removed" sh -c "! kubectl get clusterrole airlock-operator"
check "admission policies removed" sh -c "! kubectl get validatingadmissionpolicy airlock-sandbox-runtime-class && ! kubectl get validatingadmissionpolicy airlock-agent-bundle"
check "CRD kept after uninstall" same_uid "$crd_uid" crd $CRD
check "Sandboxes kept after uninstall" same_uid "$survivor_uid" -n helm-keep sandbox survivor

# A CRD managed by hand and a release with crds.enabled=false (and the init-container delivery).
check "the kept CRD is now managed by hand (no Helm ownership, no keep policy)" by_hand
crd_rv=$(rv crd $CRD)
check "installing with crds.enabled=false while the CRD exists succeeds" install_without_crd "$tag"
check "  ...operator and gateway Ready" both_ready
check "  ...the release's manifest holds no CRD" no_crd_in_release
check "  ...the CRD is untouched (uid $crd_uid, resourceVersion $crd_rv)" untouched "$crd_uid" "$crd_rv" crd $CRD
check "  ...the CRD is not adopted by the release" not_helm_owned crd $CRD
check "  ...the operator delivers the agent by init container" operator_arg --agent-delivery=init-container
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata: {name: init, namespace: helm-keep}
spec: {image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, lifetime: {ttlSeconds: 600}}
YAML
kubectl -n helm-keep create serviceaccount agent >/dev/null
kubectl -n helm-keep create rolebinding agent --clusterrole=airlock-sandbox-editor --serviceaccount=helm-keep:agent >/dev/null
check "agentDelivery InitContainer: a new Sandbox becomes Ready" \
  kubectl -n helm-keep wait --for=condition=Ready sandbox/init --timeout=180s
check "  ...its pod has the init container airlock-install, no agent ConfigMap, the agent as PID 1" init_delivery init "$tag"
check "  ...and runs a command through the installed gateway" gateway_exec init
check "  ...unlike the pod made under the default delivery (agent ConfigMap, no init container)" bundle_delivery survivor
"$HELM" uninstall airlock -n $NS --wait --timeout 120s >/dev/null
check "uninstalling the release without the CRD leaves the CRD untouched" untouched "$crd_uid" "$crd_rv" crd $CRD
check "  ...and the Sandboxes" same_uid "$survivor_uid" -n helm-keep sandbox survivor
check "installing again (as make install, images '$tag') succeeds" reinstall "$tag"
check "the release is deployed again" deployed
check "operator Deployment Ready again" ready airlock-operator
check "gateway Deployment Ready again" ready airlock-exec-gateway
check "the CRD is the kept object (uid $crd_uid), adopted: Helm's ownership metadata" adopted "$crd_uid" crd $CRD
check "the CRD is kept on uninstall again (helm.sh/resource-policy: keep)" keep_policy crd $CRD
check "the Sandbox kept through uninstall still exists (uid $survivor_uid)" same_uid "$survivor_uid" -n helm-keep sandbox survivor
kubectl delete namespace helm-keep --wait=false >/dev/null
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
