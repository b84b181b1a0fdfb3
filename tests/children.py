"""Child Python processes (notebook kernels, determinism and address-space checks) must import
the same den as the test process: the one installed in site-packages by `pip install .`, or a
checkout built in place. A child started in the checkout would otherwise import the source tree,
which has no compiled `_core` when den was installed with pip."""
import os
import site
from pathlib import Path

import den

DEN_HOME = Path(den.__file__).resolve().parent.parent  # the folder that holds the imported den


def child_env(**extra):
    """os.environ plus `extra`, with DEN_HOME first on PYTHONPATH unless it is a site-packages
    folder (which the child finds by itself)."""
    env = {**os.environ, **extra}
    installed = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    if DEN_HOME not in installed:
        env["PYTHONPATH"] = os.pathsep.join([str(DEN_HOME)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env
