#!/usr/bin/env bash
# Chart rendering (no cluster needed): the gateway's TLS volume, flags and Secret reference, the
# cert-manager Certificate, the token audiences and the allowed RuntimeClasses, the checks
# that refuse incomplete TLS settings, and the CRD switches (crds.enabled, crds.keep). Prints a closing line in the `N passed, N failed` form.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HELM=${HELM:-helm}
CHART=$ROOT/charts/airlock
pass=0 fail=0
check() { if "${@:2}" >/dev/null 2>&1; then pass=$((pass+1)); echo "ok   - $1"; else fail=$((fail+1)); echo "FAIL - $1"; fi; }
render() { "$HELM" template t "$CHART" -n airlock-system --kube-version 1.34.0 "$@"; }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

render > "$out/default.yaml" 2>"$out/err" || { echo "FAIL - default render: $(cat "$out/err")"; exit 1; }
check "default: plaintext, gRPC readiness probe" grep -q '^            grpc:$' "$out/default.yaml"
check "default: no --tls-cert" sh -c "! grep -q -- '--tls-cert' '$out/default.yaml'"
check "default: tokens must be minted for audience airlock" grep -q -- '- --token-audience=airlock$' "$out/default.yaml"
check "default: only the default RuntimeClass" grep -q -- '- --allowed-runtime-classes=kata$' "$out/default.yaml"
check "default: connection and stream limits" grep -q -- '- --max-concurrent-streams=256$' "$out/default.yaml"

# The CRDs' own documents (the agent key Secret keeps its keep policy whatever crds.keep says).
crd_doc() { awk 'BEGIN { RS = "\n---" } /\nkind: CustomResourceDefinition\n/' "$1"; }
export -f crd_doc
# other_kinds FILE: the kinds of the rendered documents but the CRD, sorted.
other_kinds() { sed -n 's/^kind: //p' "$1" | grep -vx CustomResourceDefinition | sort; }
check "default: exactly three CRDs: sandboxes, sandboxtemplates, sandboxpools" sh -c "[ \"\$(grep -c '^kind: CustomResourceDefinition\$' '$out/default.yaml')\" = 3 ] && grep -q '^  name: sandboxes.airlock.dev\$' '$out/default.yaml' && grep -q '^  name: sandboxtemplates.airlock.dev\$' '$out/default.yaml' && grep -q '^  name: sandboxpools.airlock.dev\$' '$out/default.yaml'"
check "default: the CRDs are kept on uninstall (helm.sh/resource-policy: keep)" bash -c "[ \"\$(crd_doc '$out/default.yaml' | grep -c '^    helm.sh/resource-policy: keep\$')\" = 3 ]"
check "default: no SandboxTemplate or SandboxPool" sh -c "! grep -Eq '^kind: Sandbox(Template|Pool)\$' '$out/default.yaml'"
render --set crds.keep=false > "$out/nokeep.yaml"
check "crds.keep=false: the CRD without the keep policy" bash -c "grep -q '^kind: CustomResourceDefinition\$' '$out/nokeep.yaml' && crd_doc '$out/default.yaml' | grep -q 'helm.sh/resource-policy' && ! crd_doc '$out/nokeep.yaml' | grep -q 'helm.sh/resource-policy'"
render --set crds.enabled=false > "$out/nocrd.yaml"
check "crds.enabled=false: no CRD rendered" sh -c "! grep -q '^kind: CustomResourceDefinition\$' '$out/nocrd.yaml' && ! grep -q 'sandboxes.airlock.dev\$' '$out/nocrd.yaml'"
other_kinds "$out/default.yaml" > "$out/default.kinds"; other_kinds "$out/nocrd.yaml" > "$out/nocrd.kinds"
check "crds.enabled=false: everything else still rendered (Deployments, RBAC, policies...)" sh -c "grep -qx Deployment '$out/default.kinds' && cmp -s '$out/default.kinds' '$out/nocrd.kinds'"

check "agentDirect (default): the key Secret, read by the operator and the gateway" sh -c "grep -q '^  name: t-airlock-agent-key\$' '$out/default.yaml' && grep -q -- '--agent-key-file=/etc/airlock/agent-key/key' '$out/default.yaml'"
check "agentDirect (default): operator and gateway pods are agent clients, the operator writes token Secrets" sh -c "[ \"\$(grep -c 'airlock.dev/agent-client: \"true\"' '$out/default.yaml')\" = 2 ] && grep -q 'resources: \[\"secrets\"\]' '$out/default.yaml' && grep -q -- '- --agent-port=7070' '$out/default.yaml'"
check "agentDirect (default): a policy confines the operator's Secret writes to airlock-agent-token-*" sh -c "grep -q '^  name: t-airlock-operator-secrets\$' '$out/default.yaml' && grep -q \"startsWith('airlock-agent-token-')\" '$out/default.yaml'"
render --set agentDirect.enabled=false > "$out/nodirect.yaml"
check "agentDirect.enabled=false: no key, no label, no secrets rule, the gateway uses pods/exec" sh -c "! grep -q 'agent-key' '$out/nodirect.yaml' && ! grep -q 'operator-secrets' '$out/nodirect.yaml' && ! grep -q 'agent-client' '$out/nodirect.yaml' && ! grep -q '\"secrets\"' '$out/nodirect.yaml' && grep -q -- '- --agent-transport=pods-exec' '$out/nodirect.yaml'"
render --set agentDirect.existingSecret=mine > "$out/ownkey.yaml"
check "agentDirect.existingSecret: that Secret mounted, none created" sh -c "grep -q 'secretName: mine' '$out/ownkey.yaml' && ! grep -q 'name: t-airlock-agent-key' '$out/ownkey.yaml'"

render -f "$ROOT/e2e/values-local.yaml" > "$out/local.yaml"
check "default: no e2b port" sh -c "! grep -q 'e2b' '$out/default.yaml'"
render --set gateway.e2b.enabled=true --set gateway.e2b.domain=sbx.example.com --set gateway.e2b.namespace=agents > "$out/e2b.yaml"
check "gateway.e2b: the flags, the container port and the Service port" sh -c "grep -q -- '- --e2b-listen=0.0.0.0:3000\$' '$out/e2b.yaml' && grep -q -- '- --e2b-domain=sbx.example.com\$' '$out/e2b.yaml' && grep -q -- '- --e2b-namespace=agents\$' '$out/e2b.yaml' && [ \"\$(grep -c 'name: http-e2b' '$out/e2b.yaml')\" = 2 ]"
render --set gateway.e2b.enabled=true --set agentDirect.enabled=false > /dev/null 2> "$out/e2b-nodirect.err"; e2b_nodirect=$?
check "gateway.e2b without agentDirect: refused with a message" sh -c "[ $e2b_nodirect != 0 ] && grep -q 'gateway.e2b.enabled needs agentDirect.enabled' '$out/e2b-nodirect.err'"
render --set gateway.e2b.namespace=Not_A_Name > /dev/null 2>&1; e2b_badns=$?
check "gateway.e2b.namespace must be a namespace name (schema)" [ "$e2b_badns" != 0 ]
check "local values: the default RuntimeClass is gvisor" grep -q -- '- --allowed-runtime-classes=gvisor$' "$out/local.yaml"
check "local values: the demo's SandboxTemplate and SandboxPool (2 replicas) in airlock-demo" python3 -c "
import yaml
docs = [d for d in yaml.safe_load_all(open('$out/local.yaml')) if d]
t = [d for d in docs if d['kind'] == 'SandboxTemplate']
p = [d for d in docs if d['kind'] == 'SandboxPool']
assert len(t) == 1 and len(p) == 1, (t, p)
assert t[0]['metadata'] ['namespace'] == 'airlock-demo' and t[0]['spec']['image']
assert p[0]['spec'] == {'templateRef': {'name': t[0]['metadata']['name']}, 'replicas': 2}, p
"
check "the operator may read templates and pools, and write pool status" sh -c "grep -q 'resources: \[\"sandboxtemplates\", \"sandboxpools\"\]' '$out/default.yaml' && grep -q 'sandboxpools/status' '$out/default.yaml'"
check "agentDirect: the secrets policy covers DELETE too" sh -c "grep -q 'operations: \[\"CREATE\", \"UPDATE\", \"DELETE\"\]' '$out/default.yaml'"
render --set 'runtimeClass.allowed={runc,kata}' > "$out/allowed.yaml"
check "runtimeClass.allowed joins the default, without duplicates" grep -q -- '- --allowed-runtime-classes=kata,runc$' "$out/allowed.yaml"
render --set 'gateway.auth.tokenAudiences=null' > "$out/noaud.yaml"
check "tokenAudiences null: no --token-audience" sh -c "! grep -q -- '--token-audience' '$out/noaud.yaml'"
render --set gateway.auth.mode=none --set 'gateway.auth.tokenAudiences={airlock}' > "$out/none.yaml"
check "auth mode none: no --token-audience" sh -c "! grep -q -- '--token-audience' '$out/none.yaml'"

render --set gateway.tls.enabled=true --set gateway.tls.secretName=my-tls > "$out/tls.yaml"
check "tls: --tls-cert and --tls-key" sh -c "grep -q -- '- --tls-cert=/etc/airlock/tls/tls.crt$' '$out/tls.yaml' && grep -q -- '- --tls-key=/etc/airlock/tls/tls.key$' '$out/tls.yaml'"
check "tls: the Secret is mounted" sh -c "grep -q 'secretName: my-tls$' '$out/tls.yaml' && grep -q 'mountPath: /etc/airlock/tls$' '$out/tls.yaml'"
check "tls: readiness is a TCP check (the gRPC probe cannot speak TLS)" sh -c "! grep -q '^            grpc:$' '$out/tls.yaml'"
check "tls with an existing Secret: no Certificate" sh -c "! grep -q '^kind: Certificate$' '$out/tls.yaml'"
check "tls: the output is valid YAML documents" python3 -c "import yaml" 2>/dev/null && check "tls: the output is valid YAML documents" python3 -c "import sys,yaml; list(yaml.safe_load_all(open('$out/tls.yaml')))"

render --set gateway.tls.enabled=true --set gateway.tls.certManager.enabled=true \
  --set gateway.tls.certManager.issuerRef.name=ca --set gateway.tls.certManager.issuerRef.kind=ClusterIssuer \
  --set 'gateway.tls.certManager.dnsNames={airlock.example.com}' > "$out/cm.yaml"
check "certManager: a Certificate into <fullname>-tls" sh -c "grep -q '^kind: Certificate$' '$out/cm.yaml' && grep -q 'secretName: t-airlock-exec-gateway-tls$' '$out/cm.yaml'"
check "certManager: the Service's DNS names and extra names" sh -c "grep -q -- '- t-airlock-exec-gateway.airlock-system.svc$' '$out/cm.yaml' && grep -q -- '- airlock.example.com$' '$out/cm.yaml'"
check "certManager: issuerRef" grep -q 'kind: ClusterIssuer$' "$out/cm.yaml"

check "tls without a Secret or cert-manager is refused" sh -c "! '$HELM' template t '$CHART' --kube-version 1.34.0 --set gateway.tls.enabled=true"
check "  ...with a message naming the values" sh -c "'$HELM' template t '$CHART' --kube-version 1.34.0 --set gateway.tls.enabled=true 2>&1 | grep -q 'gateway.tls.enabled needs gateway.tls.secretName'"
check "certManager without an issuer is refused" sh -c "'$HELM' template t '$CHART' --kube-version 1.34.0 --set gateway.tls.enabled=true --set gateway.tls.certManager.enabled=true 2>&1 | grep -q 'issuerRef.name'"
check "schema: a bad runtimeClass.allowed entry is refused" sh -c "! '$HELM' template t '$CHART' --kube-version 1.34.0 --set 'runtimeClass.allowed={Bad_Name}'"
check "schema: issuerRef.kind must be Issuer or ClusterIssuer" sh -c "! '$HELM' template t '$CHART' --kube-version 1.34.0 --set gateway.tls.certManager.issuerRef.kind=Foo"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
