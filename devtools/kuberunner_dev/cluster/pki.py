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


# The real node's identities. The kubelet's name and group are what the Node authorizer expects;
# the apiserver's kubelet client is a cluster admin, so the kubelet's webhook authorizer lets
# `kubectl logs/exec` through; kube-proxy's user has the built-in system:node-proxier binding.
NODES_GROUP = "system:nodes"
APISERVER_KUBELET_CLIENT = ("kube-apiserver-kubelet-client", "system:masters")
KUBE_PROXY_USER = "system:kube-proxy"
COREDNS_USER = "kuberunner:coredns"


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


@dataclass(frozen=True)
class NodePki:
    """Credentials of the real node's processes and of the apiserver towards the kubelet."""

    kubelet_client_cert: Path
    kubelet_client_key: Path
    kubelet_serving_cert: Path
    kubelet_serving_key: Path
    apiserver_kubelet_cert: Path
    apiserver_kubelet_key: Path
    kube_proxy_token: str
    coredns_token: str


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


def _signed(directory: Path, base: str, subject: str, ext: str) -> tuple[Path, Path]:
    """A key and a certificate signed by the cluster CA in `directory` (ca.crt/ca.key)."""
    _openssl(
        "req", *EC_KEY, "-nodes", "-subj", subject,
        "-keyout", f"{base}.key", "-out", f"{base}.csr",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{base}.ext").write_text(
        f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"
    )
    _openssl(
        "x509", "-req", "-in", f"{base}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "3650", "-extfile", f"{base}.ext", "-out", f"{base}.crt",
        cwd=directory,
    )  # fmt: skip
    for suffix in ("key", "crt"):
        (directory / f"{base}.{suffix}").chmod(0o600)
    return directory / f"{base}.crt", directory / f"{base}.key"


def make_node_pki(pki: Pki, node_name: str, node_ip: str) -> NodePki:
    """Certificates for the real node and tokens for kube-proxy and CoreDNS (appended to the
    token file, so this must run before the apiserver starts)."""
    directory = pki.ca_cert.parent
    client_cert, client_key = _signed(
        directory,
        "kubelet-client",
        f"/O={NODES_GROUP}/CN=system:node:{node_name}",
        "extendedKeyUsage=clientAuth\n",
    )
    serving_cert, serving_key = _signed(
        directory,
        "kubelet-serving",
        f"/CN={node_name}",
        f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{node_ip},DNS:{node_name}\n",
    )
    cn, group = APISERVER_KUBELET_CLIENT
    api_cert, api_key = _signed(
        directory,
        "apiserver-kubelet-client",
        f"/O={group}/CN={cn}",
        "extendedKeyUsage=clientAuth\n",
    )
    proxy_token, dns_token = secrets.token_hex(24), secrets.token_hex(24)
    with pki.token_file.open("a") as fh:
        fh.write(f"{proxy_token},{KUBE_PROXY_USER},{KUBE_PROXY_USER}\n")
        fh.write(f"{dns_token},{COREDNS_USER},{COREDNS_USER}\n")
    return NodePki(
        kubelet_client_cert=client_cert,
        kubelet_client_key=client_key,
        kubelet_serving_cert=serving_cert,
        kubelet_serving_key=serving_key,
        apiserver_kubelet_cert=api_cert,
        apiserver_kubelet_key=api_key,
        kube_proxy_token=proxy_token,
        coredns_token=dns_token,
    )
