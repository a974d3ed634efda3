#!/usr/bin/env bash
# Builds the local cluster's upstream components from the Go module proxy and caches the binaries
# outside the repository, keyed by version:  $AIRLOCK_CACHE/k8s/<version>/bin/...
# A warm cache returns at once. Usage: build-k8s.sh [k8s|kube-router|helm|grpcurl|kwok|all]
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.34.4}
KUBE_ROUTER_VERSION=${KUBE_ROUTER_VERSION:-v2.1.0}
HELM_VERSION=${HELM_VERSION:-v3.19.0}
GRPCURL_VERSION=${GRPCURL_VERSION:-v1.9.4}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE=${AIRLOCK_CACHE:-/var/cache/airlock}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOPATH=${GOPATH:-$HOME/go}

log() { printf '[build] %s\n' "$*" >&2; }

build_k8s() {
  local out="$CACHE/k8s/$K8S_VERSION/bin"
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd)
  local ok=1; for b in "${want[@]}"; do [ -x "$out/$b" ] || ok=0; done
  if [ $ok = 1 ]; then log "kubernetes $K8S_VERSION: cached in $out"; return; fi
  local w="$CACHE/k8s/$K8S_VERSION/src"; mkdir -p "$w" "$out"; cd "$w"
  log "kubernetes $K8S_VERSION: resolving modules (first run downloads ~1 GB into the Go module cache)"
  local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  local minor=${K8S_VERSION#v1.}; local staging="v0.$minor"
  rm -f go.mod go.sum
  go mod init airlock.local/k8sbuild >/dev/null 2>&1
  # k8s.io/kubernetes requires its staging modules at v0.0.0 with local replaces: pin them.
  awk '$2=="v0.0.0" && $1 ~ /^k8s.io\// {print $1}' "$gomod" | sort -u | while read -r m; do
    go mod edit -replace "$m=$m@$staging"
  done
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >/dev/null
  local etcdv; etcdv=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$gomod")
  go get "go.etcd.io/etcd/server/v3@$etcdv" >/dev/null
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local major=1 minorn=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minorn -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  log "kubernetes $K8S_VERSION: compiling (15-35 min cold on 2 cores)"
  go build -trimpath -ldflags "$ld" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
  go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  log "kubernetes $K8S_VERSION: built into $out"
}

# kube-router's firewall enforces NetworkPolicy in the test cluster only (never shipped).
build_kube_router() {
  local out="$CACHE/kube-router/$KUBE_ROUTER_VERSION/bin"
  if [ -x "$out/kube-router" ]; then log "kube-router $KUBE_ROUTER_VERSION: cached"; return; fi
  local w="$CACHE/kube-router/$KUBE_ROUTER_VERSION/src"; mkdir -p "$w" "$out"; cd "$w"
  rm -f go.mod go.sum; go mod init airlock.local/krbuild >/dev/null 2>&1
  log "kube-router $KUBE_ROUTER_VERSION: compiling"
  go get "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" >/dev/null
  go build -trimpath -ldflags "-s -w" -o "$out/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
}

# kwok: simulated nodes and pods for `make bench-scale` (e2e/cluster kwok-up; never in make test).
build_kwok() {
  local out="$CACHE/kwok/$KWOK_VERSION/bin"
  if [ -x "$out/kwok" ] && grep -q '^# airlock stages v3' "$CACHE/kwok/$KWOK_VERSION/stages.yaml" 2>/dev/null; then log "kwok $KWOK_VERSION: cached"; return; fi
  local w="$CACHE/kwok/$KWOK_VERSION/src"; mkdir -p "$w" "$out"; cd "$w"
  rm -f go.mod go.sum; go mod init airlock.local/kwokbuild >/dev/null 2>&1
  log "kwok $KWOK_VERSION: compiling"
  go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >/dev/null
  go build -trimpath -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok
  # Its "fast" stages (nodes Ready with lease heartbeats; pods Running and Ready at once, deleted
  # when asked), from the module's own kustomize/stage directory.
  local src; src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  local f first=1 dest="$CACHE/kwok/$KWOK_VERSION/stages.yaml"
  echo "# airlock stages v3 (kwok's fast stages)" > "$dest.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml; do
    [ $first = 1 ] || echo "---"; first=0; cat "$src/$f"
  done >> "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

build_helm() {
  local out="$CACHE/helm/$HELM_VERSION/bin"
  if [ -x "$out/helm" ]; then log "helm $HELM_VERSION: cached"; return; fi
  local w="$CACHE/helm/$HELM_VERSION/src"; mkdir -p "$w" "$out"; cd "$w"
  rm -f go.mod go.sum; go mod init airlock.local/helmbuild >/dev/null 2>&1
  log "helm $HELM_VERSION: compiling"
  go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >/dev/null
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$out/helm" helm.sh/helm/v3/cmd/helm
}

# grpcurl: the README's gRPC examples are run as pasted by e2e/tests/readme-examples.sh.
build_grpcurl() {
  local out="$CACHE/grpcurl/$GRPCURL_VERSION/bin"
  if [ -x "$out/grpcurl" ]; then log "grpcurl $GRPCURL_VERSION: cached"; return; fi
  local w="$CACHE/grpcurl/$GRPCURL_VERSION/src"; mkdir -p "$w" "$out"; cd "$w"
  rm -f go.mod go.sum; go mod init airlock.local/grpcurlbuild >/dev/null 2>&1
  log "grpcurl $GRPCURL_VERSION: compiling"
  go get "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" >/dev/null
  go build -trimpath -ldflags "-s -w -X main.version=$GRPCURL_VERSION" -o "$out/grpcurl" github.com/fullstorydev/grpcurl/cmd/grpcurl
}

case "${1:-all}" in
  k8s) build_k8s ;;
  kube-router) build_kube_router ;;
  helm) build_helm ;;
  grpcurl) build_grpcurl ;;
  kwok) build_kwok ;;
  all) build_k8s; build_kube_router; build_helm; build_grpcurl ;;
  *) echo "usage: $0 [k8s|kube-router|helm|grpcurl|kwok|all]" >&2; exit 2 ;;
esac
