{{/* Names ---------------------------------------------------------------------------------- */}}
{{- define "caduceus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix; kept short (<= 40) so that derived names (LWS pods: name-GROUP-INDEX,
     StatefulSet pods with their controller-revision label) stay within 63 characters. */}}
{{- define "caduceus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "caduceus.router.fullname" -}}{{ include "caduceus.fullname" . }}-router{{- end -}}
{{- define "caduceus.router.registry" -}}{{ include "caduceus.fullname" . }}-router-registry{{- end -}}
{{- define "caduceus.worker.fullname" -}}{{ include "caduceus.fullname" . }}-worker{{- end -}}

{{/* Labels -------------------------------------------------------------------------------- */}}
{{- define "caduceus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "caduceus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: caduceus
{{- end -}}

{{- define "caduceus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "caduceus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "caduceus.router.selectorLabels" -}}
{{ include "caduceus.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "caduceus.worker.selectorLabels" -}}
{{ include "caduceus.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{/* Images -------------------------------------------------------------------------------- */}}
{{- define "caduceus.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{/* Model --------------------------------------------------------------------------------- */}}
{{- define "caduceus.model.path" -}}
{{- $m := .Values.model -}}
{{- if $m.dir -}}
{{- printf "%s/%s" (trimSuffix "/" $m.mountPath) (trimPrefix "/" $m.dir) -}}
{{- else -}}
{{- $m.mountPath -}}
{{- end -}}
{{- end -}}

{{- define "caduceus.model.volume" -}}
- name: model
{{- if eq .Values.model.volume.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required "model.volume.pvc.claimName is required when model.volume.type is pvc" .Values.model.volume.pvc.claimName }}
    readOnly: true
{{- else }}
  hostPath:
    path: {{ required "model.volume.hostPath.path is required when model.volume.type is hostPath" .Values.model.volume.hostPath.path }}
    type: {{ .Values.model.volume.hostPath.type }}
{{- end }}
{{- end -}}

{{/* Workers: ranks per pod, the group layout checks ------------------------------------ */}}
{{- define "caduceus.worker.ranksPerPod" -}}
{{- $w := .Values.workers -}}
{{- if $w.multiNode -}}
{{- div (int $w.tensorParallelSize) (int $w.nodesPerReplica) -}}
{{- else -}}
{{- $w.tensorParallelSize -}}
{{- end -}}
{{- end -}}

{{- define "caduceus.validate" -}}
{{- $w := .Values.workers -}}
{{- if $w.multiNode -}}
{{- if lt (int $w.nodesPerReplica) 2 -}}
{{- fail "workers.multiNode needs workers.nodesPerReplica >= 2 (one node per group: set multiNode false)" -}}
{{- end -}}
{{- if ne (mod (int $w.tensorParallelSize) (int $w.nodesPerReplica)) 0 -}}
{{- fail (printf "workers.tensorParallelSize (%d) must be a multiple of workers.nodesPerReplica (%d)" (int $w.tensorParallelSize) (int $w.nodesPerReplica)) -}}
{{- end -}}
{{- else if ne (int $w.nodesPerReplica) 1 -}}
{{- fail "workers.nodesPerReplica > 1 needs workers.multiNode: true" -}}
{{- end -}}
{{- if and (eq $w.device "cpu") (eq (int64 $w.kvCacheBytes) 0) -}}
{{- fail "workers.device cpu needs an explicit workers.kvCacheBytes (0 sizes the cache from GPU memory)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if lt (int .Values.router.scheduler.maxTokensPerStep) (int .Values.router.scheduler.maxNumSeqs) -}}
{{- fail "router.scheduler.maxTokensPerStep must be at least router.scheduler.maxNumSeqs (every running sequence decodes a token each step)" -}}
{{- end -}}
{{- if and .Values.router.apiToken.enabled (not .Values.router.apiToken.secretName) -}}
{{- fail "router.apiToken.enabled needs router.apiToken.secretName" -}}
{{- end -}}
{{- end -}}

{{/* Pod security shared by both components: non-root (the images' uid 10001), no privilege
     escalation, read-only root filesystem. */}}
{{- define "caduceus.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
