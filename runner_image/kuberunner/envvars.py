"""Every environment variable kuberunner reads or sets, named once.

The operator writes the ``KUBERUNNER_*`` ones into pods and the runner image reads them; keeping
the names here lets both sides import the same constants instead of spelling them again.
"""

from __future__ import annotations

from typing import Final

# JSON {runner_name: "http://host:port"}: where the API server's remote handles send calls.
RUNNER_MAP: Final = "KUBERUNNER_RUNNER_MAP"
# JSON {"0": {env...}, "1": ...}: one env map entry per runner worker process.
WORKER_ENV_MAP: Final = "KUBERUNNER_WORKER_ENV_MAP"
# The index of this worker process in the worker env map (set by the supervisor).
WORKER_INDEX: Final = "KUBERUNNER_WORKER_INDEX"
# A YAML configuration file (.yml/.yaml), then nested JSON or YAML overrides merged over it.
CONFIG: Final = "KUBERUNNER_CONFIG"
CONFIG_OVERRIDES: Final = "KUBERUNNER_CONFIG_OVERRIDES"

# prometheus_client's multiprocess mode: where every worker of a pod keeps its metric files.
PROMETHEUS_MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"

# Which GPUs a worker sees; "-1" hides them all.
CUDA_VISIBLE_DEVICES: Final = "CUDA_VISIBLE_DEVICES"
# One of THREAD_ENVS, all set to the same value: the one status shows per worker.
OMP_NUM_THREADS: Final = "OMP_NUM_THREADS"
# The thread-pool sizes the scheduling strategy sets, in BentoML 1.2.20's order.
THREAD_ENVS: Final = (
    "BENTOML_NUM_THREAD",
    OMP_NUM_THREADS,
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "RAYON_RS_NUM_CPUS",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
