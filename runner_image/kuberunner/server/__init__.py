"""`kuberunner runner serve`: supervisor, workers, batching, wire format, metrics."""
