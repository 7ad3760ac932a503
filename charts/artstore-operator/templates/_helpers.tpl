{{- define "artstore-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "artstore-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "artstore-operator.labels" -}}
app.kubernetes.io/name: {{ include "artstore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "artstore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "artstore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "artstore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "artstore-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "artstore-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Image of the workloads the operator creates: workloadImage, else the operator's own. */}}
{{- define "artstore-operator.workloadImage" -}}
{{- default (include "artstore-operator.image" .) .Values.workloadImage -}}
{{- end -}}

{{/* Selects the pods of the archive's workloads (labels the operator puts on them). */}}
{{- define "artstore-operator.workloadSelector" -}}
matchLabels:
  app.kubernetes.io/name: artstore
  app.kubernetes.io/managed-by: artstore-operator
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values: [storage-element, query-node, ingester]
{{- end -}}
