"""Token sources of the operator's API client: files re-read when they change, exec plugins
run again before expiry or after a 401, and unsupported kubeconfig sections refused clearly."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kuberunner_operator.credentials import (
    CredentialError,
    ExecToken,
    FileToken,
    StaticToken,
    token_source,
)

PLUGIN = """\
import json, os, pathlib, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
counter = pathlib.Path(sys.argv[1])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
status = {"token": f"token-{runs}"}
if os.environ.get("EXPIRES"):
    status["expirationTimestamp"] = os.environ["EXPIRES"]
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"""


def plugin(tmp_path: Path, expires: datetime | None = None) -> dict[str, object]:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    env = (
        [{"name": "EXPIRES", "value": expires.isoformat().replace("+00:00", "Z")}]
        if expires
        else []
    )
    return {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(script), str(tmp_path / "runs")],
        "env": env,
    }


async def test_file_token_is_read_again_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    source = FileToken(path, check_every=0.0)
    assert await source.token() == "first"
    path.write_text("second-and-longer\n")
    assert await source.token() == "second-and-longer"
    path.unlink()  # mid-rotation: the last token is kept until a new file reads
    assert await source.token() == "second-and-longer"


async def test_exec_plugin_token_is_cached_and_run_again_after_a_401(tmp_path: Path) -> None:
    source = ExecToken(plugin(tmp_path), tmp_path)
    assert await source.token() == "token-1"
    assert await source.token() == "token-1"  # no expiry given: kept
    source.invalidate()  # what the client does on a 401
    assert await source.token() == "token-2"


async def test_exec_plugin_runs_again_shortly_before_expiry(tmp_path: Path) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)  # inside the 60 s refresh margin
    source = ExecToken(plugin(tmp_path, expires=soon), tmp_path)
    assert await source.token() == "token-1"
    assert await source.token() == "token-2"
    later = ExecToken(plugin(tmp_path, expires=datetime.now(UTC) + timedelta(hours=1)), tmp_path)
    first = await later.token()
    assert await later.token() == first


async def test_exec_plugin_failures_say_which_plugin_and_why(tmp_path: Path) -> None:
    failing = {"apiVersion": "client.authentication.k8s.io/v1", "command": "false"}
    with pytest.raises(CredentialError, match="exec plugin false exited 1"):
        await ExecToken(failing, tmp_path).token()
    with pytest.raises(CredentialError, match="apiVersion 'v0' is not supported"):
        ExecToken({"apiVersion": "v0", "command": "x"}, tmp_path)


def test_kubeconfig_user_sections_choose_their_source(tmp_path: Path) -> None:
    assert isinstance(token_source({"token": "t"}, tmp_path), StaticToken)
    assert isinstance(token_source({"tokenFile": "tok"}, tmp_path), FileToken)
    assert isinstance(token_source({"exec": plugin(tmp_path)}, tmp_path), ExecToken)
    with pytest.raises(CredentialError, match="auth-provider 'gcp' is not supported"):
        token_source({"auth-provider": {"name": "gcp"}}, tmp_path)
