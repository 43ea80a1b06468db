"""The admin kubeconfig of a dev cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def render_kubeconfig(
    name: str,
    server: str,
    ca_cert_pem: bytes,
    token: str | None = None,
    *,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    user: str | None = None,
) -> str:
    """A kubeconfig whose single context `name` reaches `server` as one user: by bearer token
    (the admin by default) or by client certificate (the kubelet)."""
    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if client_cert is not None and client_key is not None:
        credentials["client-certificate"] = str(client_cert)
        credentials["client-key"] = str(client_key)
    user_name = user or f"{name}-admin"
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_cert_pem).decode(),
                },
            }
        ],
        "users": [{"name": user_name, "user": credentials}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": name, "user": user_name, "namespace": "default"},
            }
        ],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(path: Path, content: str) -> None:
    """Write the kubeconfig readable only by its owner (it carries an admin token)."""
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(content)
