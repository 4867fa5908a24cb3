{{/* Chart name, overridable. */}}
{{- define "foresight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix for every resource: the release name, plus the chart name when the release
name does not already contain it. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "foresight.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "foresight.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the controller pods; they never change across upgrades. */}}
{{- define "foresight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "foresight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "foresight.labels" -}}
helm.sh/chart: {{ include "foresight.chart" . }}
{{ include "foresight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: foresight
{{- end }}

{{- define "foresight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "foresight.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "foresight.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "foresight.leaseName" -}}
{{- default (printf "%s-leader" (include "foresight.fullname" .)) .Values.controller.leaderElection.leaseName }}
{{- end }}

{{/* host:port the controller serves /metrics, /healthz and /readyz on; IPv6 hosts get brackets. */}}
{{- define "foresight.metricsAddress" -}}
{{- if contains ":" .Values.metrics.host }}
{{- printf "[%s]:%d" .Values.metrics.host (int .Values.metrics.port) }}
{{- else }}
{{- printf "%s:%d" .Values.metrics.host (int .Values.metrics.port) }}
{{- end }}
{{- end }}

{{/*
The rules the controller needs wherever it watches ScalingPolicies: read policies, write their
status, scale their targets, record events, and (only with Prometheus auth) read the Secrets
policies name. One list, used by the ClusterRole and by each per-namespace Role alike.
*/}}
{{- define "foresight.policyRules" -}}
- apiGroups: ["autoscaling.foresight.dev"]
  resources: ["scalingpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["autoscaling.foresight.dev"]
  resources: ["scalingpolicies/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments/scale", "statefulsets/scale", "replicasets/scale"]
  verbs: ["get", "patch", "update"]
{{- range .Values.rbac.extraScaleTargets }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: [{{ printf "%s/scale" .resource | quote }}]
  verbs: ["get", "patch", "update"]
{{- end }}
# Read-only: another autoscaler on a policy's target (HPA, KEDA ScaledObject) makes the policy stand down.
# Without KEDA installed the second rule grants nothing and the controller treats ScaledObjects as none.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.prometheus.auth.enabled }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}
