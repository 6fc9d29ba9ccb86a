{{- define "krakenfeed-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "krakenfeed-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "krakenfeed-operator.labels" -}}
{{ include "krakenfeed-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: krakenfeed
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "krakenfeed-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "krakenfeed-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches: the release namespace unless given. */}}
{{- define "krakenfeed-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{- define "krakenfeed-operator.clusterwide" -}}
{{- if has "*" .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/*
Exactly the calls the operator makes. kopf lists, watches and patches the
KrakenFeeds (finalizers, annotations; status through the subresource), watches
the children it reacts to and posts core events; the reconciler reads, creates
and server-side-applies ConfigMaps, Deployments and Strimzi KafkaTopics and lists
worker Pods. Nothing is ever deleted (owner references let Kubernetes collect
the children) and Secrets are never read: the workers get the CloudNativePG
secret through secretKeyRef in their own pod spec.
*/}}
{{- define "krakenfeed-operator.namespacedRules" -}}
- apiGroups: [krakenfeed.io]
  resources: [krakenfeeds]
  verbs: [list, watch, patch]
- apiGroups: [krakenfeed.io]
  resources: [krakenfeeds/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [kafka.strimzi.io]
  resources: [kafkatopics]
  verbs: [get, list, watch, create, patch]
{{- end -}}
