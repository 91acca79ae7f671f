{{/* Name of the chart, overridable. */}}
{{- define "vibe-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified name of the release's objects. */}}
{{- define "vibe-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "vibe-operator.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "vibe-operator.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vibe-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vibe-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vibe-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vibe-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: vibe-cloud
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vibe-operator.serviceAccountName" -}}
{{- default (include "vibe-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "vibe-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "vibe-operator.dataplaneImage" -}}
{{- default (printf "ghcr.io/vibe-cloud/vibe-dataplane:%s" .Chart.AppVersion) .Values.tenants.dataplaneImage -}}
{{- end -}}

{{- define "vibe-operator.webhookName" -}}
{{- printf "%s-webhook" (include "vibe-operator.fullname" .) -}}
{{- end -}}

{{- define "vibe-operator.webhookCertSecret" -}}
{{- printf "%s-webhook-cert" (include "vibe-operator.fullname" .) -}}
{{- end -}}

{{- define "vibe-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "vibe-operator.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "vibe-operator.controlPlaneUrl" -}}
{{- if .Values.controlPlane.publicUrl -}}
{{- .Values.controlPlane.publicUrl -}}
{{- else if .Values.controlPlane.ingress.host -}}
{{- printf "https://%s" .Values.controlPlane.ingress.host -}}
{{- else -}}
{{- printf "http://%s.%s.svc" (include "vibe-operator.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
The RBAC rules the operator needs, from files/rbac.yaml (the single list that a test in
operator/tests/rbac.rs compares with the API calls the operator makes). Returns YAML with the keys
cluster, tenant and operator.
*/}}
{{- define "vibe-operator.rbacRules" -}}
{{- tpl (.Files.Get "files/rbac.yaml") . -}}
{{- end -}}
