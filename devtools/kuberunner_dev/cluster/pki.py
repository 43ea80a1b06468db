"""Keys, certificates and the token file of a dev cluster, made with the openssl CLI.

The cluster gets its own CA so that clients verify the apiserver (no insecure-skip-tls-verify)
and the controller-manager can publish a real root CA into every namespace.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Names the apiserver is reached by: from the host and, by convention, from inside pods.
APISERVER_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:10.96.0.1",
)

ADMIN_USER = "kuberunner-admin"
# P-256 keys: Kubernetes accepts them everywhere here, and they are made in milliseconds where
# RSA-2048 takes about a second each on a busy machine.
EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    token_file: Path
    admin_token: str


class PkiError(RuntimeError):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise PkiError("the openssl command is needed to make the cluster's keys; install openssl")
    done = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PkiError(f"openssl {' '.join(args)} failed:\n{done.stderr.strip()}")


def make_pki(directory: Path, cluster_name: str) -> Pki:
    """Create CA, apiserver serving cert, service-account key pair and token file in `directory`."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    days = "3650"
    _openssl(
        "req", "-x509", *EC_KEY, "-nodes", "-days", days,
        "-subj", f"/CN={cluster_name}-ca", "-keyout", "ca.key", "-out", "ca.crt",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *EC_KEY, "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", "apiserver.key", "-out", "apiserver.csr",
        cwd=directory,
    )  # fmt: skip
    (directory / "apiserver.ext").write_text(
        f"subjectAltName={','.join(APISERVER_SANS)}\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", days, "-extfile", "apiserver.ext", "-out", "apiserver.crt",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "sa.key",
        cwd=directory,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)

    token = secrets.token_hex(24)
    token_file = directory / "tokens.csv"
    # token,user,uid,"groups": system:masters bypasses RBAC, as a kubeadm admin.conf does.
    token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    for path in directory.iterdir():
        path.chmod(0o600)
    return Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        token_file=token_file,
        admin_token=token,
    )
