#!/usr/bin/env bash
# e2e/tests/cluster-lifecycle.sh [all|rerun]
#   all (default): `e2e/cluster down` leaves no process, mount, netns, bridge, address or iptables
#     rule of its own behind, and `up` works again afterwards; then the `rerun` checks.
#   rerun: on a running cluster (nothing is taken down): `up` again leaves every healthy component
#     alone (same pids) and a new Service gets a working ClusterIP; a component that died (here
#     kube-proxy) is started again by `up` while the others keep their pids.
# Prints a closing line in the `N passed, N failed` form.
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
STATE=${AIRLOCK_STATE:-/var/lib/airlock-cluster}
COMPONENTS="containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router"
pass=0 fail=0
eval "$("$HERE/cluster" env)"
check() { # DESCRIPTION COMMAND...: the command must succeed
  if "${@:2}" >/dev/null 2>&1; then pass=$((pass+1)); echo "ok   - $1"; else fail=$((fail+1)); echo "FAIL - $1"; fi
}
none() { [ -z "$("$@" 2>/dev/null)" ]; }
# absent PATTERN CMD...: CMD (a listing: iptables -S, ipset list) runs and succeeds, and no line of
# its output matches PATTERN. A missing or failing tool fails the check (it proves nothing).
absent() {
  local out; out=$("${@:2}" 2>/dev/null) || { echo "$2 missing or failed" >&2; return 1; }
  ! printf '%s\n' "$out" | grep -qE "$1"
}
# present PATTERN CMD...: CMD succeeds and a line of its output matches PATTERN.
present() { local out; out=$("${@:2}" 2>/dev/null) || return 1; printf '%s\n' "$out" | grep -qE "$1"; }
IPT_OURS='KUBE-|AIRLOCK-|CNI-|airlock0|10\.244\.'
IPSET_OURS='^(KUBE-|kube-router)'

# pids: `name=pid` for every component `e2e/cluster status` reports running.
pids() { "$HERE/cluster" status 2>/dev/null | awk '$2 == "running" { sub(/\)$/, "", $4); print $1 "=" $4 }'; }
pid_in() { printf '%s\n' "$1" | sed -n "s/^$2=\([0-9][0-9]*\)\$/\1/p"; } # PIDS NAME
# all_running PIDS: every component has a pid in PIDS (and `status` says all run).
all_running() {
  local c; "$HERE/cluster" status >/dev/null 2>&1 || return 1
  for c in $COMPONENTS; do [ -n "$(pid_in "$1" "$c")" ] || { echo "$c not running" >&2; return 1; }; done
}
# same_pids BEFORE AFTER [EXCEPT]: every component but EXCEPT has one and the same pid in both.
same_pids() {
  local c a b
  for c in $COMPONENTS; do
    [ "$c" = "${3:-}" ] && continue
    a=$(pid_in "$1" "$c"); b=$(pid_in "$2" "$c")
    [ -n "$a" ] && [ "$a" = "$b" ] || { echo "$c: pid '$a' before, '$b' after" >&2; return 1; }
  done
}

# A namespace of this test with a TCP listener (pod `server`, label app=echo, port 8080, answers
# `hello`) and a pod `client` that connects from inside the pod network.
NS=${LIFECYCLE_NS:-cluster-lifecycle-$$}
LISTENER='import socket,sys
s=socket.socket()
s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("0.0.0.0",8080))
s.listen(64)
while True:
  c,_=s.accept()
  c.sendall(b"hello")
  c.close()'
pods_up() {
  kubectl create namespace "$NS" >/dev/null || return 1
  kubectl -n "$NS" apply -f - >/dev/null <<Y || return 1
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: echo}}
spec:
  runtimeClassName: runc
  terminationGracePeriodSeconds: 0
  automountServiceAccountToken: false
  containers:
  - {name: main, image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never,
     command: [python3, -c, $(printf '%s' "$LISTENER" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  runtimeClassName: runc
  terminationGracePeriodSeconds: 0
  automountServiceAccountToken: false
  containers:
  - {name: main, image: airlock.local/sandbox-python:0.1.0, imagePullPolicy: Never, command: [sleep, "3600"]}
Y
  kubectl -n "$NS" wait --for=condition=Ready pod/server pod/client --timeout=120s >/dev/null
}
# service NAME: a ClusterIP Service NAME, port 80 -> the listener's 8080; prints its ClusterIP.
service() {
  kubectl -n "$NS" create service clusterip "$1" --tcp=80:8080 >/dev/null || return 1
  kubectl -n "$NS" patch service "$1" -p '{"spec":{"selector":{"app":"echo"}}}' >/dev/null || return 1
  kubectl -n "$NS" get service "$1" -o jsonpath='{.spec.clusterIP}'
}
# reach IP: one connection from the client pod to IP:80 gets `hello` (port 80 is only served
# through kube-proxy's translation to the listener's 8080).
reach() {
  [ -n "$1" ] || return 1
  [ "$(kubectl -n "$NS" exec client -- python3 -c "import socket; s=socket.create_connection(('$1',80),3); print(s.recv(16).decode())" 2>/dev/null)" = hello ]
}
# reach_within SECONDS IP: kube-proxy programs a new Service asynchronously: poll until reached.
reach_within() {
  local end=$(( $(date +%s) + $1 ))
  until reach "$2"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 1; done
}

unreachable() { [ -n "$1" ] && ! reach "$1"; } # IP: a ClusterIP that does not answer (yet)
gone() { # PID: the process exits (waits up to 30 s)
  local i; [ -n "$1" ] || return 1
  for i in $(seq 1 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}
new_pid() { [ -n "$2" ] && [ "$2" != "$1" ]; } # OLD NEW
stopped_in_status() { { "$HERE/cluster" status || true; } | grep -E "^$1 +stopped\$"; } # NAME (status fails then)

rerun_checks() {
  local before after ip
  before=$(pids)
  check "every component runs before the second up" all_running "$before"
  "$HERE/cluster" up
  after=$(pids)
  check "every component runs after a second up" all_running "$after"
  check "a second up restarted no healthy component (same pids)" same_pids "$before" "$after"
  check "pods of a fresh namespace start" pods_up
  ip=$(service first)
  check "a new Service (ClusterIP '$ip') reaches its pod after the second up" reach_within 60 "$ip"

  # One component dies; `up` starts it again and leaves the others alone.
  before=$after
  local kp; kp=$(pid_in "$before" kube-proxy)
  [ -n "$kp" ] && kill "$kp"
  check "kube-proxy (pid '$kp') exited" gone "$kp"
  check "status reports kube-proxy stopped" stopped_in_status kube-proxy
  ip=$(service while-down)
  check "a Service made while kube-proxy is down has no working ClusterIP ('$ip')" unreachable "$ip"
  "$HERE/cluster" up
  after=$(pids)
  check "every component runs after up restarted kube-proxy" all_running "$after"
  check "kube-proxy has a new pid ('$kp' before, '$(pid_in "$after" kube-proxy)' now)" new_pid "$kp" "$(pid_in "$after" kube-proxy)"
  check "the other components kept their pids" same_pids "$before" "$after" kube-proxy
  check "the Service made while kube-proxy was down now reaches its pod ('$ip')" reach_within 60 "$ip"
  ip=$(service after-restart)
  check "a new Service reaches its pod after the restart ('$ip')" reach_within 60 "$ip"
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
}

case "${1:-all}" in
  all)
    # The cluster's own rules and sets are there before `down` (so their absence after it means
    # `down` removed them, not that the tool or the pattern sees nothing).
    for t in filter nat; do
      check "before down: iptables table $t holds the cluster's rules" present "$IPT_OURS" iptables -t "$t" -S
    done
    if [ -n "$(kubectl get networkpolicies -A -o name 2>/dev/null)" ]; then
      check "before down: kube-router's ipsets exist (NetworkPolicies are enforced)" present "$IPSET_OURS" ipset list -n
    else
      check "before down: ipset answers (no NetworkPolicy, so no kube-router set yet)" ipset list -n
    fi
    "$HERE/cluster" down
    check "no cluster process left" none pgrep -f "$STATE|/run/airlock|airlock-node"
    check "no mount left under the state directories" none grep -E " ($STATE|/run/airlock)[/ ]" /proc/self/mounts
    check "no CNI network namespace left" none sh -c "ip netns list | grep '^cni-'"
    check "bridge airlock0 removed" none sh -c "ip link show airlock0 2>/dev/null"
    check "node address removed from lo" none sh -c "ip addr show dev lo | grep 10.200.0.1"
    check "test addresses removed from lo" none sh -c "ip addr show dev lo | grep -E '10\.201\.0\.[12]/|192\.0\.2\.1/'"
    for t in filter nat mangle raw; do
      check "no KUBE-/AIRLOCK-/CNI- chain or rule in iptables table $t" absent "$IPT_OURS" iptables -t "$t" -S
    done
    check "no kube-router ipset left" absent "$IPSET_OURS" ipset list -n
    check "state directory removed" test ! -e "$STATE"
    "$HERE/cluster" up
    check "node Ready after up" sh -c "kubectl get node airlock-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
    rerun_checks
    ;;
  rerun) rerun_checks ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
