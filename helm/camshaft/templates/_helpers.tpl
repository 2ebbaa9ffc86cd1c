{{/*
Names, labels, images, and the TOML config files the services read.
*/}}

{{- define "camshaft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object's name; short enough for "-explainer-headless". */}}
{{- define "camshaft.fullname" -}}
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

{{- define "camshaft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Component object names. */}}
{{- define "camshaft.coordinator.fullname" -}}{{ include "camshaft.fullname" . }}-coordinator{{- end -}}
{{- define "camshaft.worker.fullname" -}}{{ include "camshaft.fullname" . }}-worker{{- end -}}
{{- define "camshaft.explainer.fullname" -}}{{ include "camshaft.fullname" . }}-explainer{{- end -}}
{{- define "camshaft.etcd.fullname" -}}{{ include "camshaft.fullname" . }}-etcd{{- end -}}
{{- define "camshaft.etcd.headless" -}}{{ include "camshaft.fullname" . }}-etcd-headless{{- end -}}

{{/* Labels: common (every object) and selector (pods of one component). */}}
{{- define "camshaft.labels" -}}
helm.sh/chart: {{ include "camshaft.chart" .root }}
{{ include "camshaft.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: camshaft
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "camshaft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "camshaft.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* metadata.annotations of a top-level object, when there are any (indented for metadata). */}}
{{- define "camshaft.annotations" -}}
{{- $all := merge (deepCopy (default dict .extra)) .root.Values.commonAnnotations -}}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "camshaft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "camshaft.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The camshaft image of one variant: dict "root" $ "variant" "cpu"|"cuda". */}}
{{- define "camshaft.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end -}}
{{- $digest := index $img.digest .variant -}}
{{- if $digest -}}
{{- printf "%s@%s" $repo $digest -}}
{{- else -}}
{{- printf "%s:%s-%s" $repo (default .root.Chart.AppVersion $img.tag) .variant -}}
{{- end -}}
{{- end -}}

{{- define "camshaft.etcd.image" -}}
{{- $img := .Values.etcd.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end -}}
{{- if $img.digest -}}{{ printf "%s@%s" $repo $img.digest }}{{- else -}}{{ printf "%s:%s" $repo $img.tag }}{{- end -}}
{{- end -}}

{{/* Soft or hard anti-affinity of one component's pods across nodes. */}}
{{- define "camshaft.podAntiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (fromYaml (include "camshaft.selectorLabels" .))) -}}
{{- if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{ toYaml $term | nindent 6 | trim }}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Service addresses (in-cluster DNS). */}}
{{- define "camshaft.coordinator.host" -}}
{{ include "camshaft.coordinator.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end -}}
{{- define "camshaft.explainer.host" -}}
{{ include "camshaft.explainer.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end -}}
{{- define "camshaft.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}
{{- define "camshaft.coordinator.url" -}}
{{ include "camshaft.scheme" . }}://{{ include "camshaft.coordinator.host" . }}:{{ .Values.coordinator.service.port }}
{{- end -}}
{{- define "camshaft.explainer.url" -}}
{{ include "camshaft.scheme" . }}://{{ include "camshaft.explainer.host" . }}:{{ .Values.explainer.service.port }}
{{- end -}}

{{/* Secrets. */}}
{{- define "camshaft.tls.secretName" -}}
{{- default (printf "%s-tls" (include "camshaft.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}
{{- define "camshaft.auth.secretName" -}}
{{- default (printf "%s-auth" (include "camshaft.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}
{{- define "camshaft.workerToken.secretName" -}}
{{- default (printf "%s-worker-token" (include "camshaft.fullname" .)) .Values.auth.workerTokenSecret -}}
{{- end -}}
{{/*
The Secret and key the ServiceMonitors send as a bearer token to the
coordinator's and explainers' /metrics (which ask for a viewer's or
editor's token when the service asks clients for tokens):
metrics.serviceMonitor.authorization, else auth.*'s token, else none.
A dict with name and key, or empty.
*/}}
{{- define "camshaft.metrics.scrapeToken" -}}
{{- $a := .Values.metrics.serviceMonitor.authorization -}}
{{- if $a.secretName -}}
{{- toYaml (dict "name" $a.secretName "key" $a.key) -}}
{{- else if .Values.auth.enabled -}}
{{- toYaml (dict "name" (include "camshaft.auth.secretName" .) "key" .Values.auth.tokenKey) -}}
{{- end -}}
{{- end -}}
{{- define "camshaft.etcdAuth.secretName" -}}
{{- default (printf "%s-etcd-auth" (include "camshaft.fullname" .)) .Values.externalEtcd.auth.existingSecret -}}
{{- end -}}
{{- define "camshaft.etcdAuthEnabled" -}}
{{- if and (not .Values.etcd.enabled) .Values.externalEtcd.auth.enabled }}true{{ end -}}
{{- end -}}
{{- define "camshaft.etcdTlsEnabled" -}}
{{- if and (not .Values.etcd.enabled) .Values.externalEtcd.tls.enabled }}true{{ end -}}
{{- end -}}

{{/* Paths inside the pods. */}}
{{- define "camshaft.paths.config" -}}/etc/camshaft/config{{- end -}}
{{- define "camshaft.paths.runConfig" -}}/run/camshaft{{- end -}}
{{- define "camshaft.paths.tls" -}}/etc/camshaft/tls{{- end -}}
{{- define "camshaft.paths.auth" -}}/etc/camshaft/auth{{- end -}}
{{- define "camshaft.paths.tokens" -}}/etc/camshaft/tokens{{- end -}}
{{- define "camshaft.paths.workerToken" -}}/etc/camshaft/worker-token{{- end -}}
{{- define "camshaft.paths.etcdTls" -}}/etc/camshaft/etcd-tls{{- end -}}
{{- define "camshaft.paths.etcdAuth" -}}/etc/camshaft/etcd-auth{{- end -}}

{{/*
Which config file a service reads: the ConfigMap's, or with an etcd
password the copy an init container completed under /run/camshaft.
*/}}
{{- define "camshaft.configPath" -}}
{{- if and (ne .component "worker") (include "camshaft.etcdAuthEnabled" .root) -}}
{{ include "camshaft.paths.runConfig" .root }}/{{ .component }}.toml
{{- else -}}
{{ include "camshaft.paths.config" .root }}/{{ .component }}.toml
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------------------
TOML. Helm reads numbers in values as floats, and toToml would write
10000 as 10000.0, which the services' integer fields refuse; so the files
are written here, value by value.
------------------------------------------------------------------ */}}
{{- define "camshaft.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "camshaft.toml.value" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}{{ toJson . }}
{{- else if eq $k "bool" -}}{{ . }}
{{- else if or (eq $k "float64") (eq $k "float32") -}}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else if hasPrefix "int" $k -}}{{ . }}
{{- else if eq $k "map" -}}
{{- $m := . -}}
{{- if not $m }}{}{{ else }}{ {{ range $i, $key := keys $m | sortAlpha }}{{ if $i }}, {{ end }}{{ include "camshaft.toml.key" $key }} = {{ include "camshaft.toml.value" (index $m $key) }}{{ end }} }{{ end -}}
{{- else if eq $k "slice" -}}
[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "camshaft.toml.value" $e }}{{ end }}]
{{- else -}}
{{- fail (printf "camshaft: cannot write a %s as a TOML value" $k) -}}
{{- end -}}
{{- end -}}

{{/* A table: dict "name" "coordinator" "values" (dict ...). Null values are left out. */}}
{{- define "camshaft.toml.table" -}}
[{{ .name }}]
{{- $values := .values -}}
{{- range $key := keys $values | sortAlpha }}
{{- $v := index $values $key }}
{{- if not (kindIs "invalid" $v) }}
{{ include "camshaft.toml.key" $key }} = {{ include "camshaft.toml.value" $v }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The store URL: etcd://member,member/prefix/ (etcds:// for TLS). */}}
{{- define "camshaft.store.url" -}}
{{- $endpoints := list -}}
{{- $scheme := "etcd" -}}
{{- if .Values.etcd.enabled -}}
{{- $fullname := include "camshaft.etcd.fullname" . -}}
{{- $headless := include "camshaft.etcd.headless" . -}}
{{- range $i := until (int .Values.etcd.replicaCount) -}}
{{- $endpoints = append $endpoints (printf "%s-%d.%s.%s.svc.%s:%d" $fullname $i $headless $.Release.Namespace $.Values.clusterDomain (int $.Values.etcd.clientPort)) -}}
{{- end -}}
{{- else -}}
{{- $endpoints = .Values.externalEtcd.endpoints -}}
{{- if .Values.externalEtcd.tls.enabled }}{{ $scheme = "etcds" }}{{ end -}}
{{- end -}}
{{- printf "%s://%s%s" $scheme (join "," $endpoints) .Values.store.prefix -}}
{{- end -}}

{{/*
Top-level keys a service's file starts with (TOML keys before the first
table): the store (servers), the client credentials (servers) and the
workers' credential (the coordinator accepts it on WorkerLink, a worker
presents it; both inherit the top-level worker_token_file). Workers never
get the client token: WorkerLink refuses it.
dict "root" $ "component" "coordinator".
*/}}
{{- define "camshaft.toml.topLevel" -}}
{{- $server := ne .component "worker" }}
{{- if $server }}
# The store: the bundled etcd's members or externalEtcd.endpoints.
store = {{ include "camshaft.store.url" .root | toJson }}
{{- if .root.Values.auth.enabled }}
# The bearer token (an editor) client calls may carry.
auth_token_file = {{ printf "%s/%s" (include "camshaft.paths.auth" .root) .root.Values.auth.tokenKey | toJson }}
{{- end }}
{{- if .root.Values.auth.tokensSecret }}
# Principals and their roles: token,name,role per line.
auth_tokens_file = {{ printf "%s/tokens.csv" (include "camshaft.paths.tokens" .root) | toJson }}
{{- end }}
{{- end }}
{{- if ne .component "explainer" }}
# The workers' credential ({{ ternary "accepted on WorkerLink" "presented to the coordinator" $server }}).
worker_token_file = {{ printf "%s/token" (include "camshaft.paths.workerToken" .root) | toJson }}
{{- end }}
{{- end -}}

{{/*
TLS (tls.enabled). The services: the top-level [tls] table (cert, key, and
client_ca with clientAuth), which the binary hands to every service. A
worker, as a client: [worker.tls] with the CA it trusts, and its
certificate with clientAuth. dict "root" $ "worker" bool.
*/}}
{{- define "camshaft.toml.tls" -}}
{{- if .root.Values.tls.enabled }}
{{- $dir := include "camshaft.paths.tls" .root }}
{{- $tls := dict }}
{{- if .worker }}
{{- $_ := set $tls "ca" (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- if or (not .worker) .root.Values.tls.clientAuth }}
{{- $_ := set $tls "cert" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $tls "key" (printf "%s/tls.key" $dir) }}
{{- end }}
{{- if and (not .worker) .root.Values.tls.clientAuth }}
{{- $_ := set $tls "client_ca" (printf "%s/ca.crt" $dir) }}
{{- end }}

{{ include "camshaft.toml.table" (dict "name" (ternary "worker.tls" "tls" .worker) "values" $tls) }}
{{- end }}
{{- end -}}

{{/*
[etcd]: last in the file, so the init container can append the password
(camshaft reads no password file yet).
*/}}
{{- define "camshaft.toml.etcd" -}}
{{- $etcd := dict "keep_checkpoints" .Values.store.keepCheckpoints "connect_timeout_ms" .Values.store.connectTimeoutMs "request_timeout_ms" .Values.store.requestTimeoutMs -}}
{{- if .Values.store.blobs.enabled }}{{ $_ := set $etcd "blob_dir" .Values.store.blobs.mountPath }}{{ end -}}
{{- if include "camshaft.etcdTlsEnabled" . -}}
{{- $tls := dict -}}
{{- if .Values.externalEtcd.tls.existingSecret -}}
{{- $dir := include "camshaft.paths.etcdTls" . -}}
{{- $_ := set $tls "ca_file" (printf "%s/%s" $dir .Values.externalEtcd.tls.caKey) -}}
{{- if .Values.externalEtcd.tls.certKey -}}
{{- $_ := set $tls "cert_file" (printf "%s/%s" $dir .Values.externalEtcd.tls.certKey) -}}
{{- $_ := set $tls "key_file" (printf "%s/%s" $dir .Values.externalEtcd.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $etcd "tls" $tls -}}
{{- end -}}
{{- if include "camshaft.etcdAuthEnabled" . }}{{ $_ := set $etcd "username" .Values.externalEtcd.auth.username }}{{ end }}
{{ include "camshaft.toml.table" (dict "name" "etcd" "values" $etcd) }}
{{- end -}}

{{- define "camshaft.metricsAddr" -}}0.0.0.0:{{ .Values.metrics.port }}{{- end -}}

{{- define "camshaft.config.coordinator" -}}
# camshaft coordinator --config: written by the chart.
{{- include "camshaft.toml.topLevel" (dict "root" . "component" "coordinator") }}

{{/* The web console's explain page: POST /v1/explain on the coordinator
     is forwarded to the explainer Service (with the caller's token; over
     TLS trusting the chart's CA, presenting its certificate with clientAuth). */ -}}
{{ $own := dict "listen_addr" (printf "0.0.0.0:%d" (int .Values.coordinator.port)) "explainer_address" (include "camshaft.explainer.url" .) -}}
{{- if .Values.metrics.enabled }}{{ $_ := set $own "metrics_listen" (include "camshaft.metricsAddr" .) }}{{ end -}}
{{- $_ := set $own "tensorboard_dir" (ternary .Values.coordinator.tensorboard.mountPath "" .Values.coordinator.tensorboard.enabled) -}}
{{- if .Values.tls.enabled }}{{ $_ := set $own "health_listen" (printf "0.0.0.0:%d" (int .Values.coordinator.healthPort)) }}
{{- $dir := include "camshaft.paths.tls" . }}
{{- $explainerTls := dict "ca" (printf "%s/ca.crt" $dir) }}
{{- if .Values.tls.clientAuth }}{{ $_ := set $explainerTls "cert" (printf "%s/tls.crt" $dir) }}{{ $_ := set $explainerTls "key" (printf "%s/tls.key" $dir) }}{{ end }}
{{- $_ := set $own "explainer_tls" $explainerTls }}
{{- end -}}
{{- include "camshaft.toml.table" (dict "name" "coordinator" "values" (merge $own (deepCopy .Values.coordinator.config))) }}
{{- include "camshaft.toml.tls" (dict "root" . "worker" false) }}

{{ include "camshaft.toml.etcd" . }}
{{- end -}}

{{- define "camshaft.config.explainer" -}}
# camshaft explainer --config: written by the chart.
{{- include "camshaft.toml.topLevel" (dict "root" . "component" "explainer") }}

{{ $own := dict "listen_addr" (printf "0.0.0.0:%d" (int .Values.explainer.port)) "device" (ternary "cuda" "cpu" .Values.explainer.gpu.enabled) -}}
{{- if .Values.metrics.enabled }}{{ $_ := set $own "metrics_listen" (include "camshaft.metricsAddr" .) }}{{ end -}}
{{- if .Values.tls.enabled }}{{ $_ := set $own "health_listen" (printf "0.0.0.0:%d" (int .Values.explainer.healthPort)) }}{{ end -}}
{{- include "camshaft.toml.table" (dict "name" "explainer" "values" (merge $own (deepCopy .Values.explainer.config))) }}
{{- include "camshaft.toml.tls" (dict "root" . "worker" false) }}

{{ include "camshaft.toml.etcd" . }}
{{- end -}}

{{- define "camshaft.config.worker" -}}
# camshaft worker --config (with --worker-id <pod name>): written by the chart.
{{- include "camshaft.toml.topLevel" (dict "root" . "component" "worker") }}

{{ $own := dict "coordinator" (include "camshaft.coordinator.url" .) "device" (ternary "cuda" "cpu" .Values.worker.gpu.enabled) "data_dir" .Values.worker.dataDir -}}
{{- if .Values.metrics.enabled }}{{ $_ := set $own "metrics_listen" (include "camshaft.metricsAddr" .) }}{{ end -}}
{{- include "camshaft.toml.table" (dict "name" "worker" "values" (merge $own (deepCopy .Values.worker.config))) }}
{{- include "camshaft.toml.tls" (dict "root" . "worker" true) }}
{{- end -}}

{{/*
The bundled etcd's backend quota: explicit, or room for every job's
checkpoints (kept + the one being written), twice over for revisions not yet
compacted, plus the registered models. Checkpoint chunks go to blob_dir
when store.blobs is on, so only manifests stay in etcd: 2 GiB then.
*/}}
{{- define "camshaft.etcd.quotaBytes" -}}
{{- $mib := 1048576 -}}
{{- if .Values.etcd.quotaBackendBytes -}}
{{- int64 .Values.etcd.quotaBackendBytes -}}
{{- else if .Values.store.blobs.enabled -}}
{{- mul 2048 $mib -}}
{{- else -}}
{{- $s := .Values.etcd.quotaSizing -}}
{{- $checkpoints := mul 2 (add1 (int .Values.store.keepCheckpoints)) (int $s.checkpointMiB) (int $s.concurrentJobs) -}}
{{- mul (add $checkpoints (int $s.modelsMiB)) $mib -}}
{{- end -}}
{{- end -}}

{{/* A size such as 8Gi in bytes, or 0 for a form not parsed here. */}}
{{- define "camshaft.quantityBytes" -}}
{{- $units := dict "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- $m := regexFind "^[0-9]+(Mi|Gi|Ti)$" . -}}
{{- if $m -}}
{{- $unit := regexFind "(Mi|Gi|Ti)$" $m -}}
{{- mul (int64 (trimSuffix $unit $m)) (index $units $unit) -}}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* Settings that contradict each other: refused with a message. */}}
{{- define "camshaft.validate" -}}
{{- if and (not .Values.etcd.enabled) (not .Values.externalEtcd.endpoints) -}}
{{- fail "camshaft: etcd.enabled=false needs externalEtcd.endpoints (host:port of your etcd members); the services share their store through etcd" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.autoGenerated) -}}
{{- fail "camshaft: tls.enabled needs tls.existingSecret (tls.crt, tls.key, ca.crt) or tls.autoGenerated=true" -}}
{{- end -}}
{{- if and (include "camshaft.etcdAuthEnabled" .) (not .Values.externalEtcd.auth.username) -}}
{{- fail "camshaft: externalEtcd.auth.enabled needs externalEtcd.auth.username" -}}
{{- end -}}
{{- if and (include "camshaft.etcdAuthEnabled" .) (not .Values.externalEtcd.auth.existingSecret) (not .Values.externalEtcd.auth.password) -}}
{{- fail "camshaft: externalEtcd.auth.enabled needs externalEtcd.auth.existingSecret or externalEtcd.auth.password" -}}
{{- end -}}
{{- if and .Values.store.blobs.enabled (not .Values.store.blobs.existingClaim) -}}
{{- fail "camshaft: store.blobs.enabled needs store.blobs.existingClaim (a ReadWriteMany claim the coordinator and explainers share)" -}}
{{- end -}}
{{- if .Values.etcd.enabled -}}
{{- $quota := int64 (include "camshaft.etcd.quotaBytes" .) -}}
{{- $gib := 1073741824 -}}
{{- if gt $quota (mul 8 $gib) -}}
{{- fail (printf "camshaft: the etcd quota would be %d MiB, over etcd's 8 GiB maximum; lower etcd.quotaSizing or keep checkpoints on a shared volume (store.blobs)" (div $quota 1048576)) -}}
{{- end -}}
{{- $size := int64 (include "camshaft.quantityBytes" .Values.etcd.persistence.size) -}}
{{- if and .Values.etcd.persistence.enabled (gt $size 0) (lt $size $quota) -}}
{{- fail (printf "camshaft: etcd.persistence.size %s is smaller than the etcd quota (%d MiB); raise it" .Values.etcd.persistence.size (div $quota 1048576)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The camshaft container's common parts: env and the volume mounts every
camshaft process uses. dict "root" $ "component" "coordinator".
*/}}
{{- define "camshaft.env" -}}
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: HOME
  value: /tmp
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with (index .root.Values .component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "camshaft.volumeMounts" -}}
- name: config
  mountPath: {{ include "camshaft.paths.config" .root }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and (ne .component "worker") (include "camshaft.etcdAuthEnabled" .root) }}
- name: run-config
  mountPath: {{ include "camshaft.paths.runConfig" .root }}
  readOnly: true
{{- end }}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: {{ include "camshaft.paths.tls" .root }}
  readOnly: true
{{- end }}
{{- if ne .component "explainer" }}
- name: worker-token
  mountPath: {{ include "camshaft.paths.workerToken" .root }}
  readOnly: true
{{- end }}
{{- if ne .component "worker" }}
{{- if .root.Values.auth.enabled }}
- name: auth
  mountPath: {{ include "camshaft.paths.auth" .root }}
  readOnly: true
{{- end }}
{{- if .root.Values.auth.tokensSecret }}
- name: tokens
  mountPath: {{ include "camshaft.paths.tokens" .root }}
  readOnly: true
{{- end }}
{{- if and (include "camshaft.etcdTlsEnabled" .root) .root.Values.externalEtcd.tls.existingSecret }}
- name: etcd-tls
  mountPath: {{ include "camshaft.paths.etcdTls" .root }}
  readOnly: true
{{- end }}
{{- if .root.Values.store.blobs.enabled }}
- name: blobs
  mountPath: {{ .root.Values.store.blobs.mountPath }}
{{- end }}
{{- end }}
{{- if and (eq .component "coordinator") .root.Values.coordinator.tensorboard.enabled }}
- name: tensorboard
  mountPath: {{ .root.Values.coordinator.tensorboard.mountPath }}
{{- end }}
{{- with (index .root.Values .component).extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "camshaft.volumes" -}}
- name: config
  configMap:
    name: {{ include "camshaft.fullname" .root }}-config
- name: tmp
  emptyDir: {}
{{- if and (ne .component "worker") (include "camshaft.etcdAuthEnabled" .root) }}
- name: run-config
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: etcd-auth
  secret:
    secretName: {{ include "camshaft.etcdAuth.secretName" .root }}
    items:
      - key: {{ .root.Values.externalEtcd.auth.passwordKey }}
        path: password
{{- end }}
{{- if .root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "camshaft.tls.secretName" .root }}
    {{- if eq .component "worker" }}
    # A worker is a client: the CA, and its certificate only with clientAuth.
    items:
      - key: ca.crt
        path: ca.crt
      {{- if .root.Values.tls.clientAuth }}
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- end }}
    {{- end }}
{{- end }}
{{- if ne .component "explainer" }}
# The workers' credential: the coordinator and the workers, not the explainers.
- name: worker-token
  secret:
    secretName: {{ include "camshaft.workerToken.secretName" .root }}
    items:
      - key: {{ .root.Values.auth.workerTokenKey }}
        path: token
{{- end }}
{{- if ne .component "worker" }}
{{- /* Client credentials: the servers only (a worker presents its own). */}}
{{- if .root.Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "camshaft.auth.secretName" .root }}
{{- end }}
{{- if .root.Values.auth.tokensSecret }}
- name: tokens
  secret:
    secretName: {{ .root.Values.auth.tokensSecret }}
    items:
      - key: {{ .root.Values.auth.tokensKey }}
        path: tokens.csv
{{- end }}
{{- if and (include "camshaft.etcdTlsEnabled" .root) .root.Values.externalEtcd.tls.existingSecret }}
- name: etcd-tls
  secret:
    secretName: {{ .root.Values.externalEtcd.tls.existingSecret }}
{{- end }}
{{- if .root.Values.store.blobs.enabled }}
- name: blobs
  persistentVolumeClaim:
    claimName: {{ .root.Values.store.blobs.existingClaim }}
{{- end }}
{{- end }}
{{- if and (eq .component "coordinator") .root.Values.coordinator.tensorboard.enabled }}
# The jobs' TensorBoard runs (tensorboard_dir).
- name: tensorboard
  {{- with .root.Values.coordinator.tensorboard.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- with (index .root.Values .component).extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The init container that completes the config with the etcd password (only
with externalEtcd.auth): camshaft reads the password from the config file
only, and the file must not sit in a ConfigMap.
*/}}
{{- define "camshaft.initConfig" -}}
{{- if and (ne .component "worker") (include "camshaft.etcdAuthEnabled" .root) }}
- name: config
  # The main container's image, so a GPU node pulls one image, not two.
  image: {{ include "camshaft.image" (dict "root" .root "variant" (ternary "cuda" "cpu" (and (eq .component "explainer") .root.Values.explainer.gpu.enabled))) }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: ["/bin/sh", "{{ include "camshaft.paths.config" .root }}/add-etcd-password.sh"]
  args:
    - {{ include "camshaft.paths.config" .root }}/{{ .component }}.toml
    - {{ include "camshaft.paths.etcdAuth" .root }}/password
    - {{ include "camshaft.paths.runConfig" .root }}/{{ .component }}.toml
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  resources:
    requests:
      cpu: 10m
      memory: 16Mi
    limits:
      cpu: 100m
      memory: 32Mi
  volumeMounts:
    - name: config
      mountPath: {{ include "camshaft.paths.config" .root }}
      readOnly: true
    - name: etcd-auth
      mountPath: {{ include "camshaft.paths.etcdAuth" .root }}
      readOnly: true
    - name: run-config
      mountPath: {{ include "camshaft.paths.runConfig" .root }}
{{- end }}
{{- end -}}

{{/*
Probes: Kubernetes' gRPC probe on the standard grpc.health.v1 service. It
cannot speak TLS, so with tls.enabled the service also serves health alone
in plaintext on its healthPort (health_listen) and the probes go there.
dict "root" $ "probe" .Values.x.livenessProbe "values" .Values.x
*/}}
{{- define "camshaft.grpcProbe" -}}
grpc:
  port: {{ ternary .values.healthPort .values.port .root.Values.tls.enabled }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/* Checksums that roll pods when their config or secrets change. */}}
{{- define "camshaft.configChecksum" -}}
{{- include (printf "camshaft.config.%s" .component) .root | sha256sum -}}
{{- end -}}
