"""`kuberunner api serve`: the legacy Service HTTP server."""
