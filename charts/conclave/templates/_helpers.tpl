{{/* The chart name, or nameOverride. */}}
{{- define "conclave.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of namespaced objects: fullnameOverride, else the release name when it already
contains the chart name, else <release>-<chart>. At most 63 characters (Service names).
*/}}
{{- define "conclave.fullname" -}}
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
The name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): the full name plus the
release namespace, so that releases of the same name in two namespaces (e.g. one per watched
namespace) do not claim each other's objects.
*/}}
{{- define "conclave.clusterName" -}}
{{- printf "%s-%s" (include "conclave.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* name-version, as the helm.sh/chart label wants it. */}}
{{- define "conclave.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; immutable for the life of a release. */}}
{{- define "conclave.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conclave.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of every object the chart creates. */}}
{{- define "conclave.labels" -}}
helm.sh/chart: {{ include "conclave.chart" . | quote }}
{{ include "conclave.selectorLabels" . }}
app.kubernetes.io/part-of: conclave
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "conclave.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conclave.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "conclave.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Lease the replicas elect a leader with. */}}
{{- define "conclave.leaseName" -}}
{{- printf "%s-operator" (include "conclave.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
What the operator does in the namespaces it watches: read its resources and write their
status, manage their children, record events. Exactly what it uses (tests/install.rs checks
the deploy/ copy of these rules): no wildcards, no pods, nothing that grants more RBAC.
*/}}
{{- define "conclave.namespacedRules" -}}
- apiGroups: ["conclave.dev"]
  resources: ["bridges", "meetings"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["conclave.dev"]
  resources: ["bridges/status", "meetings/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["conclave.dev"]
  resources: ["bridges/finalizers", "meetings/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "secrets", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
{{- /* SFU pods: one that waits for a node that cannot take it is placed elsewhere. Read only. */}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Node addresses decide what each SFU replica advertises; read only, always cluster-wide.
     cert-manager's Certificate CRD, by name: whether cert-manager is installed. */}}
{{- define "conclave.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["certificates.cert-manager.io"]
  verbs: ["get", "list", "watch"]
{{- end }}
