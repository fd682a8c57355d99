{{/* Names and labels. */}}
{{- define "scp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scp.fullname" -}}
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

{{- define "scp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "scp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "scp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace of the session pods. */}}
{{- define "scp.sandboxNamespace" -}}
{{- default .Release.Namespace .Values.sandboxes.namespace }}
{{- end }}

{{- define "scp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "scp.secretKeySecret" -}}
{{- default (printf "%s-secret-key" (include "scp.fullname" .)) .Values.secretKey.existingSecret }}
{{- end }}

{{/* The web server's listening address: loopback only on the node's network. */}}
{{- define "scp.listenHost" -}}
{{- if .Values.hostNetwork }}127.0.0.1{{ else }}0.0.0.0{{ end }}
{{- end }}

{{/*
The settings (environment variables, all strings) of every control-plane process: the ConfigMap's data, and
the migration Job's env (a pre-install hook runs before the ConfigMap exists). Secrets are not in here.
*/}}
{{- define "scp.settings" -}}
SANDBOX_RUNTIME: kubernetes
SANDBOX_K8S_NAMESPACE: {{ include "scp.sandboxNamespace" . | quote }}
SANDBOX_K8S_INSTANCE: {{ default (include "scp.fullname" .) .Values.sandboxes.instance | quote }}
SANDBOX_K8S_IMAGE_PULL_POLICY: {{ .Values.sandboxes.imagePullPolicy | quote }}
SANDBOX_K8S_RUNTIME_CLASS: {{ .Values.sandboxes.runtimeClassName | quote }}
SANDBOX_K8S_NODE_SELECTOR: {{ if .Values.sandboxes.nodeSelector }}{{ .Values.sandboxes.nodeSelector | toJson | quote }}{{ else }}""{{ end }}
SANDBOX_K8S_TOLERATIONS: {{ if .Values.sandboxes.tolerations }}{{ .Values.sandboxes.tolerations | toJson | quote }}{{ else }}""{{ end }}
SANDBOX_K8S_POD_START_TIMEOUT: {{ .Values.sandboxes.podStartTimeout | toString | quote }}
SANDBOX_K8S_ISOLATE_NETWORK: {{ .Values.sandboxes.isolateNetwork | toString | quote }}
{{- with .Values.sandboxes.hostMemory }}
SANDBOX_HOST_MEMORY: {{ . | quote }}
{{- end }}
DATABASE_URL: {{ .Values.database.url | quote }}
DATABASE_CONN_MAX_AGE: {{ .Values.database.connMaxAge | toString | quote }}
{{- if and .Values.redis.url (not .Values.redis.urlSecret.name) }}
REDIS_URL: {{ .Values.redis.url | quote }}
{{- end }}
{{- if .Values.s3.bucket }}
SANDBOX_S3_BUCKET: {{ .Values.s3.bucket | quote }}
SANDBOX_S3_ENDPOINT_URL: {{ .Values.s3.endpointUrl | quote }}
SANDBOX_S3_REGION: {{ .Values.s3.region | quote }}
SANDBOX_S3_PATH_STYLE: {{ .Values.s3.pathStyle | toString | quote }}
{{- end }}
SANDBOX_WEB_WORKERS: {{ .Values.web.processes | toString | quote }}
DJANGO_ALLOWED_HOSTS: {{ include "scp.allowedHosts" . | quote }}
{{- with include "scp.csrfOrigins" . }}
DJANGO_CSRF_TRUSTED_ORIGINS: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.config }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Host names Django answers: the probes' and port-forwards' (localhost), the Service's, the Ingress's. */}}
{{- define "scp.allowedHosts" -}}
{{- $fullname := include "scp.fullname" . }}
{{- $hosts := list "localhost" "127.0.0.1" "[::1]" $fullname (printf "%s.%s.svc" $fullname .Release.Namespace) }}
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}
{{- $hosts = append $hosts .host }}
{{- end }}
{{- end }}
{{- join "," (uniq $hosts) }}
{{- end }}

{{- define "scp.csrfOrigins" -}}
{{- if .Values.ingress.enabled }}
{{- $tls := gt (len .Values.ingress.tls) 0 }}
{{- $origins := list }}
{{- range .Values.ingress.hosts }}
{{- $origins = append $origins (printf "%s://%s" (ternary "https" "http" $tls) .host) }}
{{- end }}
{{- join "," $origins }}
{{- end }}
{{- end }}

{{/* Environment entries from Secrets (and the API server override), shared by web, worker and migrations. */}}
{{- define "scp.secretEnv" -}}
{{- if .Values.database.passwordSecret.name }}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.passwordSecret.name }}
      key: {{ .Values.database.passwordSecret.key }}
{{- end }}
{{- if .Values.redis.urlSecret.name }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.urlSecret.name }}
      key: {{ .Values.redis.urlSecret.key }}
{{- end }}
{{- if .Values.s3.credentialsSecret.name }}
- name: SANDBOX_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.credentialsSecret.name }}
      key: {{ .Values.s3.credentialsSecret.accessKeyIdKey }}
- name: SANDBOX_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.credentialsSecret.name }}
      key: {{ .Values.s3.credentialsSecret.secretAccessKeyKey }}
{{- end }}
{{- if .Values.kubernetesApi.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.kubernetesApi.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.kubernetesApi.port | toString | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings every control-plane pod shares. */}}
{{- define "scp.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Writable directories under a read-only root: /tmp and the data dir (pip cache, scratch). */}}
{{- define "scp.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end }}

{{- define "scp.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/sandbox-control-plane
{{- end }}
