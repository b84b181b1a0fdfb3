"""den: Dynamically Expandable Networks (Yoon et al., ICLR 2018) for lifelong learning.

    import den
    tasks = den.datasets.load("digits", n_tasks=5)
    model = den.DEN(hidden=(64, 32), seed=0)
    result = den.run(model, tasks)          # AUROC matrix, capacity, seconds per stage
    print(result.summary())

Models: den.DEN and the paper's baselines den.STL, den.MTL, den.DNN, den.L2, den.EWC,
den.Progressive. Threads: den.set_num_threads(n) sets the one BLAS thread pool den uses
(OPENBLAS_NUM_THREADS sets it at start-up).
"""

from pathlib import Path as _Path

try:
    from . import _core
except ImportError as _e:
    if any(_Path(__file__).parent.glob("_core*")):
        raise  # a core is there but does not load (e.g. its OpenBLAS is gone): say so as it is
    # Python found the source checkout (the current directory comes first on sys.path) instead
    # of the installed package, and the checkout has no compiled core.
    raise ImportError(
        f"den's compiled core (den._core) is missing from {_Path(__file__).parent}. If that is a "
        "source checkout you are running from, either use the installed package from another "
        "directory (or the `den` command that `pip install .` puts on PATH), or build the core in "
        "place with `python setup.py build_ext --inplace`."
    ) from _e

from . import datasets, evaluate
from ._base import ALEXNET, LENET, Model, load
from .baselines import DNN, EWC, L2, MTL, STL, Progressive
from .expandable import DEN
from .results import RunResult, run

__version__ = "0.1.0"


def __getattr__(name):
    # den.plots needs matplotlib; import it on first use rather than with den
    if name == "plots":
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module 'den' has no attribute {name!r}")


def set_num_threads(n: int) -> None:
    """Threads of the OpenBLAS pool that all of den's matrix products use (den starts no other
    threads). Same effect as OPENBLAS_NUM_THREADS at start-up or threadpoolctl's limits."""
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """Threads of den's OpenBLAS pool."""
    return _core.get_num_threads()


def blas_info() -> dict:
    """Which OpenBLAS den runs on: its kernel (corename), build configuration and threads."""
    return _core.blas_info()


__all__ = ["ALEXNET", "DEN", "LENET", "DNN", "EWC", "L2", "MTL", "STL", "Progressive", "Model", "RunResult", "blas_info",
           "datasets", "evaluate", "get_num_threads", "load", "run", "set_num_threads"]
