{{/* The name every object carries: the release's. */}}
{{- define "vibelux.name" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "vibelux.labels" -}}
app.kubernetes.io/name: vibelux
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "vibelux.selector" -}}
app.kubernetes.io/name: vibelux
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
