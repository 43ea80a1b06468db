"""What both HTTP servers (runner workers and the API server) share: raw-ASGI helpers, the tuned
uvicorn configuration and the metric conventions."""
