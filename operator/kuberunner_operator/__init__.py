"""The kuberunner operator: RunnerService models, rendering, status, kopf handlers, dev cluster."""
