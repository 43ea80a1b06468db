"""Create (once) the separate virtual environment that holds BentoML 1.2.20 for the oracle.

BentoML is never installed into the project's own environment: its dependency pins would fight
ours. The venv lives in the user cache so that later test sessions reuse it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

BENTOML_VERSION = "1.2.20"
# pydantic 2.8+ breaks `import bentoml` 1.2.20 (reference, section 12).
REQUIREMENTS = (f"bentoml=={BENTOML_VERSION}", "pydantic<2.8")
CACHE_DIR = Path.home() / ".cache" / "kuberunner" / "oracle" / f"bentoml-{BENTOML_VERSION}"
READY_MARKER = CACHE_DIR / ".ready"


class OracleInstallError(RuntimeError):
    """The oracle venv could not be created; the message says which step failed and why."""


def venv_python(root: Path = CACHE_DIR) -> Path:
    return root / "bin" / "python"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise OracleInstallError(f"{what} failed (exit {proc.returncode}): {tail}")


def ensure_oracle_venv() -> tuple[Path, float]:
    """Return (python of the oracle venv, seconds spent installing; 0.0 when cached)."""
    CACHE_DIR.parent.mkdir(parents=True, exist_ok=True)
    lock_path = CACHE_DIR.parent / f".bentoml-{BENTOML_VERSION}.lock"
    with lock_path.open("w") as lock:
        # Several pytest processes may start at once; only one of them installs.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if READY_MARKER.exists() and venv_python().exists():
            return venv_python(), 0.0
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", "--clear", str(CACHE_DIR)], "creating the venv")
        pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, *REQUIREMENTS], f"pip install {' '.join(REQUIREMENTS)}")
        _run([str(venv_python()), "-c", "import bentoml"], "import bentoml in the oracle venv")
        READY_MARKER.write_text(f"{' '.join(REQUIREMENTS)}\n")
        return venv_python(), time.monotonic() - started


if __name__ == "__main__":
    python, seconds = ensure_oracle_venv()
    print(f"oracle python: {python} (install took {seconds:.1f}s)", file=sys.stderr)
    os._exit(0)
