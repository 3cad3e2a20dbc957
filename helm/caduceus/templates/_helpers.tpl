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

{{/* Worker shutdown timing. On SIGTERM the leader (rank 0) drains for workers.drainTimeoutSeconds,
     then shuts its group down (a few seconds). The launcher gives it --leader-grace = drain + 10
     before it signals the ranks left (and a follower pod holds its ranks' SIGTERM back as long),
     then --kill-after before SIGKILL; the kubelet's grace covers both plus a margin. */}}
{{- define "caduceus.worker.leaderGrace" -}}
{{- add (int64 .Values.workers.drainTimeoutSeconds) 10 -}}
{{- end -}}
{{- define "caduceus.worker.killAfter" -}}10{{- end -}}
{{- define "caduceus.worker.minTerminationGrace" -}}
{{- add (include "caduceus.worker.leaderGrace" . | int64) (include "caduceus.worker.killAfter" . | int64) 5 -}}
{{- end -}}
{{/* workers.terminationGracePeriodSeconds, or the minimum above when it is 0. */}}
{{- define "caduceus.worker.terminationGrace" -}}
{{- $set := int64 .Values.workers.terminationGracePeriodSeconds -}}
{{- if $set -}}{{ $set }}{{- else -}}{{ include "caduceus.worker.minTerminationGrace" . }}{{- end -}}
{{- end -}}

{{/* The worker's step limits as the router sees them (caduceus-worker's defaults when 0:
     --max-step-sequences 256, --max-step-tokens 8192; worker/server/worker_main.cc). */}}
{{- define "caduceus.worker.stepSequences" -}}
{{- int64 (default 256 .Values.workers.maxStepSequences) -}}
{{- end -}}
{{- define "caduceus.worker.stepTokens" -}}
{{- int64 (default 8192 .Values.workers.maxStepTokens) -}}
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
{{- $sched := .Values.router.scheduler -}}
{{- with $sched.speculative -}}
{{- if and .tokens (gt (int .ngramMin) (int .ngramMax)) -}}
{{- fail (printf "router.scheduler.speculative.ngramMin (%d) must not exceed ngramMax (%d)" (int .ngramMin) (int .ngramMax)) -}}
{{- end -}}
{{- end -}}
{{- $stepSeqs := include "caduceus.worker.stepSequences" . | int64 -}}
{{- $stepTokens := include "caduceus.worker.stepTokens" . | int64 -}}
{{- if gt (int64 $sched.maxNumSeqs) $stepSeqs -}}
{{- fail (printf "router.scheduler.maxNumSeqs (%d) exceeds workers.maxStepSequences (%d): the router would silently cap its batch at the worker's limit; raise workers.maxStepSequences" (int64 $sched.maxNumSeqs) $stepSeqs) -}}
{{- end -}}
{{- if gt (int64 $sched.maxTokensPerStep) $stepTokens -}}
{{- fail (printf "router.scheduler.maxTokensPerStep (%d) exceeds workers.maxStepTokens (%d): the router would silently cap its token budget at the worker's limit; raise workers.maxStepTokens" (int64 $sched.maxTokensPerStep) $stepTokens) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (float64 (default 0 .Values.autoscaling.runningRequestsPerReplica)) (float64 $sched.maxNumSeqs)) -}}
{{- fail (printf "autoscaling.runningRequestsPerReplica (%v) exceeds router.scheduler.maxNumSeqs (%d): a replica never runs that many sequences, so that target never scales out" .Values.autoscaling.runningRequestsPerReplica (int64 $sched.maxNumSeqs)) -}}
{{- end -}}
{{- $groups := ternary .Values.autoscaling.maxReplicas .Values.workers.replicas (and .Values.autoscaling.enabled true) | int64 -}}
{{- if ge $groups (int64 .Values.router.maxRegisteredReplicas) -}}
{{- fail (printf "router.maxRegisteredReplicas (%d) must exceed the worker groups that can register (%d): leave room for groups replaced under a new address before the router forgets the old one" (int64 .Values.router.maxRegisteredReplicas) $groups) -}}
{{- end -}}
{{- $minGrace := include "caduceus.worker.minTerminationGrace" . | int64 -}}
{{- if and (int64 $w.terminationGracePeriodSeconds) (lt (int64 $w.terminationGracePeriodSeconds) $minGrace) -}}
{{- fail (printf "workers.terminationGracePeriodSeconds (%d) must be at least %d (workers.drainTimeoutSeconds %d + 10 s for the leader to stop its group + 10 s before SIGKILL + 5 s); set 0 to compute it" (int64 $w.terminationGracePeriodSeconds) $minGrace (int64 $w.drainTimeoutSeconds)) -}}
{{- end -}}
{{- if and .Values.router.apiToken.enabled (not .Values.router.apiToken.secretName) -}}
{{- fail "router.apiToken.enabled needs router.apiToken.secretName" -}}
{{- end -}}
{{- $reg := .Values.router.registryToken -}}
{{- if and $reg.enabled (not $reg.secretName) -}}
{{- fail "router.registryToken.enabled needs router.registryToken.secretName" -}}
{{- end -}}
{{- $api := .Values.router.apiToken -}}
{{- if and $reg.enabled $api.enabled (eq $reg.secretName $api.secretName) (eq $reg.secretKey $api.secretKey) -}}
{{- fail "router.registryToken must not be the router.apiToken token (same secretName and secretKey): every API client could register a replica and receive prompts; use a separate token" -}}
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
