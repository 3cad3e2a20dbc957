{{/*
The pod template of one worker pod. One container runs all the ranks the pod holds through
caduceus-launch-group (deploy/docker/caduceus-launch-group): every rank is its own
caduceus-worker process with its own GPU (cuda:i) and metrics port (ports.metrics + i), and the
pod's GPUs stay visible to each other (NVLink peer access needs every GPU of the group in one
container). The launcher adds --rank, --device and --metrics-listen per rank, passes the flags
after the second "--" to global rank 0 only, stops rank 0 first on SIGTERM and gives it
--leader-grace (drainTimeoutSeconds + 10) to drain and shut its followers down, and stops the group
when any rank exits. In a follower pod (no rank 0) it holds its ranks' SIGTERM back for the same
grace: a follower rank exits at once on SIGTERM, which would break the leader's drain; the ranks
exit by themselves when the leader shuts the group down.

Called with (dict "root" $ "role" ROLE), ROLE one of:
  single   - the whole group in this pod (StatefulSet; rank 0 here; loopback rendezvous)
  leader   - LeaderWorkerSet leader pod (LWS_WORKER_INDEX 0, hosts rank 0 and the store)
  follower - LeaderWorkerSet worker pod (ranks LWS_WORKER_INDEX * ranksPerPod ...)
*/}}
{{- define "caduceus.worker.podTemplate" -}}
{{- $root := .root -}}
{{- $role := .role -}}
{{- $w := $root.Values.workers -}}
{{- $ranks := int (include "caduceus.worker.ranksPerPod" $root) -}}
{{- $hostsRank0 := ne $role "follower" -}}
{{- $multi := ne $role "single" -}}
{{- $startupFailures := max 1 (div (int $w.startupTimeoutSeconds) 10) -}}
metadata:
  labels:
    {{- include "caduceus.worker.selectorLabels" $root | nindent 4 }}
    caduceus.dev/worker-role: {{ $role }}
    {{- with $w.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    caduceus.dev/tp-size: {{ $w.tensorParallelSize | quote }}
    caduceus.dev/ranks-per-pod: {{ $ranks | quote }}
    {{- with $w.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.schedulerName }}
  schedulerName: {{ . }}
  {{- end }}
  {{- with $w.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  automountServiceAccountToken: false
  securityContext:
    {{- include "caduceus.podSecurityContext" $root | nindent 4 }}
  # The leader's drain, --leader-grace's margin, --kill-after, a margin (caduceus.worker.*).
  terminationGracePeriodSeconds: {{ include "caduceus.worker.terminationGrace" $root }}
  containers:
    - name: worker
      image: {{ include "caduceus.image" (dict "root" $root "image" $w.image) | quote }}
      imagePullPolicy: {{ $w.image.pullPolicy }}
      command: ["caduceus-launch-group"]
      args:
        - --local-ranks={{ $ranks }}
        {{- if $multi }}
        - --node-index=$(LWS_WORKER_INDEX)
        {{- else }}
        - --node-index=0
        {{- end }}
        - --device={{ $w.device }}
        - --metrics-listen=0.0.0.0:{{ int64 $w.ports.metrics }}
        - --leader-grace={{ include "caduceus.worker.leaderGrace" $root }}
        - --kill-after={{ include "caduceus.worker.killAfter" $root }}
        - --
        - caduceus-worker
        - --model={{ include "caduceus.model.path" $root }}
        - --tp-size={{ int64 $w.tensorParallelSize }}
        {{- if gt (int $w.tensorParallelSize) 1 }}
        {{- if $multi }}
        - --rendezvous=$(LWS_LEADER_ADDRESS):{{ int64 $w.ports.rendezvous }}
        {{- else }}
        - --rendezvous=127.0.0.1:{{ int64 $w.ports.rendezvous }}
        {{- end }}
        {{- if $w.gloo.iface }}
        - --gloo-iface={{ $w.gloo.iface }}
        {{- else if $multi }}
        - --gloo-hostname=$(POD_IP)
        {{- else }}
        - --gloo-hostname=127.0.0.1
        {{- end }}
        {{- end }}
        - --kv-cache-bytes={{ int64 $w.kvCacheBytes }}
        - --kv-cache-dtype={{ $w.kvCacheDtype }}
        {{- if ne $w.quantization "none" }}
        - --quantization={{ $w.quantization }}
        {{- end }}
        {{- if eq $w.device "cuda" }}
        - --gpu-memory-utilization={{ $w.gpuMemoryUtilization }}
        {{- end }}
        - --collective-timeout={{ $w.collectiveTimeoutSeconds }}
        - --drain-timeout={{ int64 $w.drainTimeoutSeconds }}
        - --connect-timeout={{ $w.connectTimeoutSeconds }}
        {{- if $w.maxStepTokens }}
        - --max-step-tokens={{ int64 $w.maxStepTokens }}
        {{- end }}
        {{- if $w.maxStepSequences }}
        - --max-step-sequences={{ int64 $w.maxStepSequences }}
        {{- end }}
        {{- range $w.extraArgs }}
        - {{ . | quote }}
        {{- end }}
        {{- if $hostsRank0 }}
        - --
        - --listen=0.0.0.0:{{ int64 $w.ports.api }}
        - --router={{ include "caduceus.router.registry" $root }}:{{ int64 $root.Values.router.ports.grpc }}
        - --advertise-address=$(POD_IP):{{ int64 $w.ports.api }}
        {{- if $root.Values.router.registryToken.enabled }}
        - --registry-token-file=/var/run/caduceus/registry-token/{{ $root.Values.router.registryToken.secretKey }}
        {{- end }}
        {{- end }}
      env:
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- range $k, $v := $w.ncclEnv }}
        - name: {{ $k }}
          value: {{ $v | quote }}
        {{- end }}
        {{- with $w.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- if $hostsRank0 }}
        - name: api
          containerPort: {{ $w.ports.api }}
          protocol: TCP
        {{- if $multi }}
        - name: rendezvous
          containerPort: {{ $w.ports.rendezvous }}
          protocol: TCP
        {{- end }}
        {{- end }}
        {{- range $i := until $ranks }}
        - name: metrics-r{{ $i }}
          containerPort: {{ add $w.ports.metrics $i }}
          protocol: TCP
        {{- end }}
      {{- if $hostsRank0 }}
      # The leader's worker API answers grpc.health.v1: SERVING once the whole group has joined
      # and loaded its shards, NOT_SERVING once the group broke.
      startupProbe:
        grpc:
          port: {{ $w.ports.api }}
        periodSeconds: 10
        failureThreshold: {{ $startupFailures }}
      readinessProbe:
        grpc:
          port: {{ $w.ports.api }}
        periodSeconds: 5
        failureThreshold: 2
      livenessProbe:
        grpc:
          port: {{ $w.ports.api }}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 6
      {{- else }}
      # Follower pods serve no API: their first rank's /metrics shows the processes are up.
      startupProbe:
        httpGet:
          path: /metrics
          port: metrics-r0
        periodSeconds: 10
        failureThreshold: {{ $startupFailures }}
      readinessProbe:
        httpGet:
          path: /metrics
          port: metrics-r0
        periodSeconds: 10
      livenessProbe:
        httpGet:
          path: /metrics
          port: metrics-r0
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 6
      {{- end }}
      resources:
        {{- $res := deepCopy (default dict $w.resources) -}}
        {{- $requests := default dict $res.requests -}}
        {{- $limits := default dict $res.limits -}}
        {{- if eq $w.device "cuda" -}}
        {{- $_ := set $requests "nvidia.com/gpu" $ranks -}}
        {{- $_ := set $limits "nvidia.com/gpu" $ranks -}}
        {{- end -}}
        {{- range $k, $v := $w.extraResources -}}
        {{- $_ := set $requests $k $v -}}
        {{- $_ := set $limits $k $v -}}
        {{- end -}}
        {{- $_ := set $res "requests" $requests -}}
        {{- $_ := set $res "limits" $limits -}}
        {{- toYaml $res | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
          {{- with $w.addCapabilities }}
          add:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      volumeMounts:
        - name: model
          mountPath: {{ $root.Values.model.mountPath }}
          readOnly: true
        - name: dshm
          mountPath: /dev/shm
        - name: tmp
          mountPath: /tmp
        {{- if and $hostsRank0 $root.Values.router.registryToken.enabled }}
        # The token rank 0 presents to the router's registry (--registry-token-file).
        - name: registry-token
          mountPath: /var/run/caduceus/registry-token
          readOnly: true
        {{- end }}
  volumes:
    {{- include "caduceus.model.volume" $root | nindent 4 }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $w.shm.sizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
    {{- if and $hostsRank0 $root.Values.router.registryToken.enabled }}
    - name: registry-token
      secret:
        secretName: {{ $root.Values.router.registryToken.secretName }}
        defaultMode: 0440
    {{- end }}
  {{- with $w.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $w.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
