"""The admin kubeconfig of a dev cluster."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def render_kubeconfig(name: str, server: str, ca_cert_pem: bytes, token: str) -> str:
    """A kubeconfig whose single context `name` reaches `server` as the admin user."""
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
        "users": [{"name": f"{name}-admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"},
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
