"""The operator soak's short version (3 rounds): the bench's own command, on its own dev
cluster. Its times are figures for bench/README.md, not asserted here; what must hold at any
speed is asserted: the operator's caches return to empty after every delete, and resyncs of
idle services write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k8s_helpers import REPO

pytestmark = pytest.mark.cluster


def test_short_soak_leaves_nothing_behind_and_idle_resyncs_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # Resync every ~5 s (the resync loop's period) so the 20 s idle window holds several.
    env = {**os.environ, "KUBERUNNER_OPERATOR_RESYNC": "2"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "operator_bench.py"), "--soak", "3",
         "--services", "20", "--idle", "20", "--cluster", f"soak-{os.getpid()}",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert [r["cached"] for r in result["rounds"]] == [0, 0, 0], result
    assert result["idle_writes"] == {}, result
    assert result["idle_reconciles"] >= 20, "no resync happened in the idle window"
    # Every service was resynced at least once in the window, and none needed a write.
    assert result["idle_resyncs"]["unchanged"] >= 20, result
    assert result["idle_resyncs"]["applied"] == 0, result
