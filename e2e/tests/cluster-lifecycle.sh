#!/usr/bin/env bash
# `e2e/cluster down` leaves no process, mount, netns, bridge, address or iptables rule of its own
# behind, and `up` works again afterwards. Prints a closing line in the `N passed, N failed` form.
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
STATE=${AIRLOCK_STATE:-/var/lib/airlock-cluster}
pass=0 fail=0
eval "$("$HERE/cluster" env)"
check() { # DESCRIPTION COMMAND...: the command must succeed
  if "${@:2}" >/dev/null 2>&1; then pass=$((pass+1)); echo "ok   - $1"; else fail=$((fail+1)); echo "FAIL - $1"; fi
}
none() { [ -z "$("$@" 2>/dev/null)" ]; }

"$HERE/cluster" down
check "no cluster process left" none pgrep -f "$STATE|/run/airlock|airlock-node"
check "no mount left under the state directories" none grep -E " ($STATE|/run/airlock)[/ ]" /proc/self/mounts
check "no CNI network namespace left" none sh -c "ip netns list | grep '^cni-'"
check "bridge airlock0 removed" none sh -c "ip link show airlock0 2>/dev/null"
check "node address removed from lo" none sh -c "ip addr show dev lo | grep 10.200.0.1"
for t in filter nat mangle raw; do
  check "no KUBE-/AIRLOCK-/CNI- chain or rule in iptables table $t" none sh -c "iptables -t $t -S | grep -E 'KUBE-|AIRLOCK-|CNI-|airlock0|10\.244\.'"
done
check "no kube-router ipset left" none sh -c "ipset list -n | grep -E '^(KUBE-|kube-router)'"
check "state directory removed" test ! -e "$STATE"

"$HERE/cluster" up
check "node Ready after a second up" sh -c "kubectl get node airlock-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
