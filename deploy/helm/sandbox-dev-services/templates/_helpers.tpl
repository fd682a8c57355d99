{{- define "dev.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dev.listen" -}}
{{- if .Values.hostNetwork }}127.0.0.1{{ else }}0.0.0.0{{ end }}
{{- end }}

{{/* One single-replica Deployment and its Service: (dict "root" $ "name" "redis" "container" (dict ...)). */}}
{{- define "dev.service" -}}
{{- $root := .root }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $root.Release.Name }}-{{ .name }}
  labels:
    {{- include "dev.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
spec:
  replicas: 1
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      app.kubernetes.io/name: {{ .name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ $root.Release.Name }}
        app.kubernetes.io/name: {{ .name }}
    spec:
      automountServiceAccountToken: false
      # Throwaway data: no reason to wait for a clean shutdown (redis took the whole 30 s default).
      terminationGracePeriodSeconds: 2
      {{- if $root.Values.hostNetwork }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      # The images' own users (mysql, redis, moto); dev only, so no numeric runAsUser is pinned here.
      securityContext:
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: {{ .name }}
          image: {{ .image }}
          imagePullPolicy: {{ $root.Values.images.pullPolicy }}
          {{- with .args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with .env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
          readinessProbe:
            {{- toYaml .probe | nindent 12 }}
            periodSeconds: 2
            failureThreshold: 60
          resources:
            {{- toYaml $root.Values.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: [ALL]
          volumeMounts:
            - name: data
              mountPath: {{ .dataPath }}
            - name: tmp
              mountPath: /tmp
            {{- with .runPath }}
            - name: run
              mountPath: {{ . }}
            {{- end }}
      volumes:
        - name: data
          emptyDir: {}
        - name: tmp
          emptyDir: {}
        {{- if .runPath }}
        - name: run
          emptyDir: {}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $root.Release.Name }}-{{ .name }}
  labels:
    {{- include "dev.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
spec:
  ports:
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .name }}
      protocol: TCP  # explicit: server-side apply on Kubernetes 1.20 needs the list key
  selector:
    app.kubernetes.io/instance: {{ $root.Release.Name }}
    app.kubernetes.io/name: {{ .name }}
{{- end }}
