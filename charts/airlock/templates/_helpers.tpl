{{/*
Chart name, truncated to 63 characters (DNS label).
*/}}
{{- define "airlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, with the chart name appended unless the release
name already contains it. Truncated so that "<fullname>-exec-gateway" (the longest suffix, 13
characters) still fits in 63.
*/}}
{{- define "airlock.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "airlock.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "airlock.labels" -}}
helm.sh/chart: {{ include "airlock.chart" . }}
app.kubernetes.io/name: {{ include "airlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: airlock
{{- end }}

{{/*
Selector labels of a component: include "airlock.selectorLabels" (dict "root" $ "component" "operator")
*/}}
{{- define "airlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airlock.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of a component's objects: include "airlock.componentLabels" (dict "root" $ "component" "operator")
*/}}
{{- define "airlock.componentLabels" -}}
{{ include "airlock.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Names of the components. */}}
{{- define "airlock.operator.fullname" -}}
{{- printf "%s-operator" (include "airlock.fullname" .) }}
{{- end }}

{{- define "airlock.gateway.fullname" -}}
{{- printf "%s-exec-gateway" (include "airlock.fullname" .) }}
{{- end }}

{{/* ServiceAccount names. */}}
{{- define "airlock.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "airlock.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "airlock.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "airlock.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference of a component: include "airlock.image" (dict "root" $ "image" .Values.operator.image)
*/}}
{{- define "airlock.image" -}}
{{- $registry := .root.Values.image.registry | trimSuffix "/" }}
{{- $tag := default .root.Values.image.tag .image.tag | default .root.Chart.AppVersion | toString }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The name of the sandboxes' PriorityClass. Fixed: the operator puts it on every sandbox pod and
scopes the per-namespace quota to it (operator/src/build/mod.rs, PRIORITY_CLASS).
*/}}
{{- define "airlock.sandboxPriorityClass" -}}
airlock-sandbox
{{- end }}

{{/*
The operator's default RuntimeClass.
*/}}
{{- define "airlock.defaultRuntimeClass" -}}
{{- default .Values.runtimeClass.name .Values.operator.defaults.runtimeClass }}
{{- end }}

{{/*
RuntimeClasses Sandboxes may name, as JSON: the default class first, then runtimeClass.allowed
(without duplicates). Used by the operator's --allowed-runtime-classes and the admission policy.
*/}}
{{- define "airlock.allowedRuntimeClasses" -}}
{{- $list := list (include "airlock.defaultRuntimeClass" .) }}
{{- range .Values.runtimeClass.allowed }}
{{- $list = append $list . }}
{{- end }}
{{- $list | uniq | toJson }}
{{- end }}

{{/*
The Secret holding the gateway's TLS certificate (tls.crt, tls.key).
*/}}
{{- define "airlock.gateway.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "airlock.gateway.fullname" .)) .Values.gateway.tls.secretName }}
{{- end }}

{{/*
Checks of combinations the schema cannot express.
*/}}
{{- define "airlock.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection) }}
{{- fail "operator.replicas > 1 needs operator.leaderElection=true: replicas would reconcile the same Sandboxes concurrently" }}
{{- end }}
{{- if and .Values.gateway.enabled (eq .Values.gateway.auth.mode "static") (not .Values.gateway.auth.staticTokens.secretName) }}
{{- fail "gateway.auth.mode=static needs gateway.auth.staticTokens.secretName (a Secret with one `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *` per line)" }}
{{- end }}
{{- if and .Values.gateway.enabled .Values.gateway.tls.enabled (not .Values.gateway.tls.secretName) (not .Values.gateway.tls.certManager.enabled) }}
{{- fail "gateway.tls.enabled needs gateway.tls.secretName (an existing kubernetes.io/tls Secret) or gateway.tls.certManager.enabled=true" }}
{{- end }}
{{- if and .Values.gateway.enabled .Values.gateway.tls.enabled .Values.gateway.tls.certManager.enabled (not .Values.gateway.tls.certManager.issuerRef.name) }}
{{- fail "gateway.tls.certManager.enabled needs gateway.tls.certManager.issuerRef.name (an Issuer or ClusterIssuer of cert-manager)" }}
{{- end }}
{{- if gt (int .Values.operator.defaults.ttl) (int .Values.operator.max.ttl) }}
{{- fail (printf "operator.defaults.ttl (%v) is larger than operator.max.ttl (%v)" .Values.operator.defaults.ttl .Values.operator.max.ttl) }}
{{- end }}
{{- if and (kindIs "invalid" .Values.operator.defaults.runAsUser) (not (kindIs "invalid" .Values.operator.defaults.runAsGroup)) }}
{{- fail "operator.defaults.runAsGroup needs operator.defaults.runAsUser" }}
{{- end }}
{{- if eq (int .Values.gateway.grpcPort) (int .Values.gateway.metrics.port) }}
{{- fail "gateway.grpcPort and gateway.metrics.port must differ" }}
{{- end }}
{{- end }}

{{/* Secret holding the key the agent tokens derive from (agentDirect). */}}
{{- define "airlock.agentKeySecret" -}}
{{- default (printf "%s-agent-key" (include "airlock.fullname" .)) .Values.agentDirect.existingSecret -}}
{{- end }}
