"""The machine-wide network pieces of the real node: the bridge, our guard table, kube-proxy's
tables and the sysctls that the node's processes change. Each `remove_*` is idempotent."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kuberunner_dev.cluster.node import (
    BRIDGE,
    GUARD_TABLE,
    KUBE_PROXY_TABLES,
    KUBERNETES_SERVICE_IP,
    NODE_IP,
    POD_SUBNET,
)

# Set by the kubelet (kernel tunables it insists on), and by the CNI bridge (forwarding, which
# pod -> ClusterIP -> pod traffic needs). `down` puts back what was there before `up`.
TOUCHED_SYSCTLS = (
    "net.ipv4.ip_forward",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
)


class NetSetupError(RuntimeError):
    pass


def _run(
    *argv: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(argv[0])
    if exe is None:
        raise NetSetupError(
            f"{argv[0]} is needed for the real node; run hack/install-system-deps.sh"
        )
    done = subprocess.run(
        [exe, *argv[1:]], input=stdin, capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise NetSetupError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def create_bridge() -> None:
    """`kr0` with the node IP: the kubelet binds there before any pod exists."""
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{NODE_IP}/{POD_SUBNET.prefixlen}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def remove_bridge() -> None:
    if bridge_exists():
        _run("ip", "link", "delete", BRIDGE)


def guard_rules(apiserver_port: int) -> str:
    """nft script of our table: nothing is forwarded between the pod bridge and any other
    interface; and pods reach the API server (127.0.0.1 only) at the `kubernetes` Service
    address. That DNAT runs before kube-proxy's chains (priority -150; a NAT chain cannot go
    below conntrack's -200), which would otherwise reject the Service for having no endpoints
    (the apiserver's loopback address cannot be one); route_localnet on the bridge lets the
    rewritten packets in."""
    family, name = GUARD_TABLE
    return (
        f"table {family} {name} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f'    iifname "{BRIDGE}" oifname != "{BRIDGE}" drop\n'
        f'    oifname "{BRIDGE}" iifname != "{BRIDGE}" drop\n'
        "  }\n"
        "  chain apiserver {\n"
        "    type nat hook prerouting priority -150; policy accept;\n"
        f'    iifname "{BRIDGE}" ip daddr {KUBERNETES_SERVICE_IP} tcp dport 443'
        f" dnat ip to 127.0.0.1:{apiserver_port}\n"
        "  }\n"
        "}\n"
    )


def add_guard(apiserver_port: int) -> None:
    _run("nft", "-f", "-", stdin=guard_rules(apiserver_port))
    # Per-interface: it goes away with the bridge.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")


def _tables() -> set[tuple[str, str]]:
    done = _run("nft", "list", "tables", check=False)
    found = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table":
            found.add((parts[1], parts[2]))
    return found


def our_tables() -> set[tuple[str, str]]:
    """Which of our guard table and kube-proxy's tables exist now."""
    return _tables() & {GUARD_TABLE, *KUBE_PROXY_TABLES}


def remove_tables() -> None:
    for family, name in our_tables():
        _run("nft", "delete", "table", family, name, check=False)


# Chains a kubelet creates in the host's iptables when makeIPTablesUtilChains is on (ours is
# off); removed anyway, in case a kubelet version ignores the setting.
KUBELET_CHAINS = (
    ("filter", "KUBE-FIREWALL"),
    ("filter", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-IPTABLES-HINT"),
    ("nat", "KUBE-KUBELET-CANARY"),
)
# Tables iptables-nft makes on first use; removed if they are new since `up` and hold no rule.
IPTABLES_NFT_TABLES = {(f, t) for f in ("ip", "ip6") for t in ("filter", "mangle", "nat")}


def remove_kubelet_chains() -> None:
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for builtin in ("INPUT", "OUTPUT"):
            _run(tool, "-t", "filter", "-D", builtin, "-j", "KUBE-FIREWALL", check=False)
        for table, chain in KUBELET_CHAINS:
            _run(tool, "-t", table, "-F", chain, check=False)
            _run(tool, "-t", table, "-X", chain, check=False)


def save_tables(path: Path) -> None:
    path.write_text(json.dumps(sorted(_tables())))


def remove_new_empty_tables(path: Path) -> None:
    """Delete the iptables-nft tables that appeared since `save_tables` and hold no rule."""
    try:
        before = {tuple(t) for t in json.loads(path.read_text())}
    except FileNotFoundError:
        return
    for family, name in (_tables() - before) & IPTABLES_NFT_TABLES:
        listing = _run("nft", "list", "table", family, name, check=False).stdout
        rules = [
            line
            for line in listing.splitlines()
            if line.strip() and not line.strip().startswith(("table", "chain", "type", "}", "#"))
        ]
        if not rules:
            _run("nft", "delete", "table", family, name, check=False)


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def save_sysctls(path: Path) -> None:
    values = {key: _sysctl_path(key).read_text().strip() for key in TOUCHED_SYSCTLS}
    path.write_text(json.dumps(values))


def restore_sysctls(path: Path) -> None:
    try:
        values: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        return
    for key, value in values.items():
        if _sysctl_path(key).read_text().strip() != value:
            _sysctl_path(key).write_text(value)
