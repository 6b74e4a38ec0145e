{{- define "fr.image" -}}
{{- if not .Values.image.repository }}{{ fail "image.repository is required (buildplane sets it)" }}{{ end -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" .Values.image.digest) }}{{ fail "image.digest must be sha256:<64 hex> (buildplane pins the pushed digest)" }}{{ end -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- end -}}

{{- define "fr.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
{{- end -}}

{{- define "fr.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* One Deployment for a component: dict "root" $ "name" NAME "c" COMPONENT-VALUES "replicas" N */}}
{{- define "fr.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "fr.labels" . | nindent 4 }}
spec:
  {{- if not (and .c.autoscaling .c.autoscaling.enabled) }}
  replicas: {{ .replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "fr.selector" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "fr.selector" . | nindent 8 }}
      {{- with .root.Values.restartedAt }}
      annotations:
        buildplane.dev/restarted-at: {{ . | quote }}
      {{- end }}
    spec:
      {{- with .root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "fr.image" .root }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          command:
            {{- toYaml .c.command | nindent 12 }}
          {{- if .c.port }}
          ports:
            - name: http
              containerPort: {{ .c.port }}
          readinessProbe:
            httpGet: {path: /, port: http}
          {{- end }}
          resources:
            {{- toYaml .c.resources | nindent 12 }}
{{- end -}}

{{- define "fr.hpa" -}}
{{- if and .c.autoscaling .c.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- include "fr.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ .c.autoscaling.minReplicas }}
  maxReplicas: {{ .c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .c.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{- define "fr.service" -}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "fr.labels" . | nindent 4 }}
spec:
  type: {{ .c.service.type }}
  selector:
    {{- include "fr.selector" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .c.service.port }}
      targetPort: http
{{- end -}}
