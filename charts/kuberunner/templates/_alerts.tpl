{{/*
Alert rule groups, in the rule-file shape (`groups:`), so the PrometheusRule and
`promtool check rules` / `promtool test rules` read the same text.
Operator series: kuberunner_operator_reconcile_total{result}, _reconcile_duration_seconds,
_leader, _managed_services. Runner series: kuberunner_runner_requests_total{runner,method,code},
_request_duration_seconds{runner,method}; the PodMonitor adds kuberunner_service,
kuberunner_runner and pod_ready target labels to every runner series, including `up`.
*/}}
{{- define "kuberunner.alertGroups" -}}
{{- $r := .Values.prometheusRule }}
{{- $job := default (include "kuberunner.suffixed" (list . "metrics")) $r.operatorJob }}
{{- $sel := printf "job=%q, namespace=%q" $job .Release.Namespace -}}
groups:
  - name: kuberunner-operator
    rules:
      - alert: KuberunnerOperatorDown
        expr: (max by (namespace, job) (up{ {{- $sel -}} }) < 1) or absent(up{ {{- $sel -}} })
        for: 5m
        labels:
          severity: critical
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: The kuberunner operator is not being scraped successfully.
          description: >-
            No target of job {{ $job }} in namespace {{ .Release.Namespace }} has answered
            /metrics for 5 minutes. RunnerServices are not reconciled while the operator is down.
      - alert: KuberunnerOperatorNoLeader
        expr: max by (namespace, job) (kuberunner_operator_leader{ {{- $sel -}} }) < 1
        for: 5m
        labels:
          severity: critical
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: No kuberunner operator replica holds the leader Lease.
          description: >-
            Every replica of job {{ "{{ $labels.job }}" }} in {{ "{{ $labels.namespace }}" }} is on
            standby, so no replica reconciles RunnerServices.
      - alert: KuberunnerReconcileErrors
        expr: sum by (namespace, job) (rate(kuberunner_operator_reconcile_total{ {{- $sel -}}, result="error"}[5m])) > 0
        for: {{ $r.for }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: RunnerService reconciles are failing.
          description: >-
            The operator ({{ "{{ $labels.namespace }}/{{ $labels.job }}" }}) reports
            {{ "{{ $value | humanize }}" }} failed reconciles per second. Check the operator's log
            and the Ready/Degraded conditions of the RunnerServices (`kubectl get rsvc -A`).
      - alert: KuberunnerReconcileSlow
        expr: histogram_quantile(0.99, sum by (namespace, job, le) (rate(kuberunner_operator_reconcile_duration_seconds_bucket{ {{- $sel -}} }[5m]))) > {{ $r.reconcileP99Seconds }}
        for: {{ $r.for }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: RunnerService reconciles are slow.
          description: >-
            The p99 reconcile time is {{ "{{ $value | humanizeDuration }}" }}, above
            {{ $r.reconcileP99Seconds }}s; the API server may be slow or the operator overloaded.
  - name: kuberunner-runners
    rules:
      - alert: KuberunnerRunnerNotReady
        expr: |-
          max by (namespace, kuberunner_service, kuberunner_runner, pod) (
            (up{kuberunner_runner!=""} == 0) or up{kuberunner_runner!="", pod_ready="false"}
          )
        for: 5m
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A runner pod is not ready.
          description: >-
            Pod {{ "{{ $labels.namespace }}/{{ $labels.pod }}" }} of runner
            {{ "{{ $labels.kuberunner_runner }}" }} (RunnerService
            {{ "{{ $labels.kuberunner_service }}" }}) has been not Ready, or has not answered
            /metrics, for 5 minutes.
            `kubectl get rsvc {{ "{{ $labels.kuberunner_service }}" }} -n {{ "{{ $labels.namespace }}" }}`
            shows the reason (CrashLoopBackOff, Unschedulable, ...).
      - alert: KuberunnerRunnerHighLatency
        expr: histogram_quantile(0.99, sum by (namespace, kuberunner_service, runner, method, le) (rate(kuberunner_runner_request_duration_seconds_bucket[5m]))) > {{ $r.runnerP99LatencySeconds }}
        for: {{ $r.for }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A runner method's p99 latency is high.
          description: >-
            p99 latency of {{ "{{ $labels.runner }}.{{ $labels.method }}" }} in
            {{ "{{ $labels.namespace }}" }} is {{ "{{ $value | humanizeDuration }}" }}, above
            {{ $r.runnerP99LatencySeconds }}s. Consider more replicas or a smaller max_latency_ms.
      - alert: KuberunnerRunnerErrors
        expr: |-
          sum by (namespace, kuberunner_service, runner) (rate(kuberunner_runner_requests_total{code=~"5.."}[5m]))
            / sum by (namespace, kuberunner_service, runner) (rate(kuberunner_runner_requests_total[5m]))
            > {{ $r.runnerErrorRatio }}
        for: {{ $r.for }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A runner answers many requests with 5xx.
          description: >-
            {{ "{{ $value | humanizePercentage }}" }} of the requests to runner
            {{ "{{ $labels.runner }}" }} in {{ "{{ $labels.namespace }}" }} fail with 5xx
            (threshold {{ $r.runnerErrorRatio }}).
{{- end }}
