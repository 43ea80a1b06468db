{{/*
Chart name, overridable by nameOverride; at most 63 characters (a DNS label).
*/}}
{{- define "kuberunner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object-name prefix: fullnameOverride, else the release name when it already contains the chart
name, else "<release>-<chart>"; at most 63 characters.
*/}}
{{- define "kuberunner.fullname" -}}
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

{{/*
"<fullname>-<suffix>", the prefix cut so that the whole stays within 63 characters.
Usage: include "kuberunner.suffixed" (list . "operator")
*/}}
{{- define "kuberunner.suffixed" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $room := int (sub 62 (len $suffix)) }}
{{- printf "%s-%s" (include "kuberunner.fullname" $ctx | trunc $room | trimSuffix "-") $suffix }}
{{- end }}

{{/* Name of the operator Deployment, its (Cluster)Roles and bindings. */}}
{{- define "kuberunner.operatorName" -}}
{{- include "kuberunner.suffixed" (list . "operator") }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "kuberunner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: immutable, so only name, instance and component. The component keeps the
operator's selector from ever matching runner pods, which also carry app.kubernetes.io/name.
*/}}
{{- define "kuberunner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuberunner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "kuberunner.labels" -}}
helm.sh/chart: {{ include "kuberunner.chart" . }}
{{ include "kuberunner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kuberunner
{{- end }}

{{/* ServiceAccount the operator runs as. */}}
{{- define "kuberunner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kuberunner.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference. */}}
{{- define "kuberunner.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Rules for the RunnerService objects and their children, in the watched namespaces
(contracts.md, "Operator process"). Kept in one place so the ClusterRole and the per-namespace
Roles list exactly the same rights.
*/}}
{{- define "kuberunner.namespacedRules" -}}
- apiGroups: ["kuberunner.io"]
  resources: ["runnerservices"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kuberunner.io"]
  resources: ["runnerservices/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["kuberunner.io"]
  resources: ["runnerservices/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Cluster-scoped reads kopf uses to scan for namespaces and CRDs. */}}
{{- define "kuberunner.scanningRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Leader election: the operator's Lease in the release namespace. */}}
{{- define "kuberunner.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* Checks of value combinations that the JSON schema cannot explain clearly. */}}
{{- define "kuberunner.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas: %d needs leaderElection.enabled=true; without leader election two operators would reconcile the same RunnerServices" (int .Values.replicas)) }}
{{- end }}
{{- end }}
