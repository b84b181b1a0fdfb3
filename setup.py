"""Build den._core from csrc/ against the NumPy C API and OpenBLAS.

OpenBLAS is found in this order (the first that works wins):
  1. DEN_OPENBLAS_INCLUDE and DEN_OPENBLAS_LIBDIR environment variables (a folder holding
     cblas.h, and a folder holding libopenblas), for custom builds;
  2. pkg-config's `openblas` (Debian/Ubuntu: apt-get install libopenblas-dev; Fedora:
     openblas-devel; Homebrew/conda: set PKG_CONFIG_PATH to their lib/pkgconfig).
Without either, the build stops and says what to install: den never falls back to a slow
reference BLAS silently.

DEN_SANITIZE=1 builds with AddressSanitizer and UBSan (see tools/sanitize.sh).
"""

import os
import shlex
import subprocess
import sys

import numpy
from setuptools import Extension, setup

HOW_TO_GET_OPENBLAS = """
den needs OpenBLAS (with its cblas.h header) to build, and did not find it.
Install it, then run the install again:
  Debian/Ubuntu:  sudo apt-get install libopenblas-dev pkg-config
  Fedora/RHEL:    sudo dnf install openblas-devel pkgconf
  Homebrew:       brew install openblas pkg-config
                  export PKG_CONFIG_PATH="$(brew --prefix openblas)/lib/pkgconfig"
  conda:          conda install -c conda-forge openblas pkg-config
Or point den at a build of your own:
  export DEN_OPENBLAS_INCLUDE=/path/to/include DEN_OPENBLAS_LIBDIR=/path/to/lib
"""


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out)


def find_openblas():
    """Return (include_dirs, library_dirs, libraries) for OpenBLAS, or exit with advice."""
    inc, libdir = os.environ.get("DEN_OPENBLAS_INCLUDE"), os.environ.get("DEN_OPENBLAS_LIBDIR")
    if inc or libdir:
        if not (inc and libdir and os.path.isfile(os.path.join(inc, "cblas.h"))):
            sys.exit("DEN_OPENBLAS_INCLUDE must name a folder with cblas.h and DEN_OPENBLAS_LIBDIR the "
                     "folder with libopenblas; got %r and %r" % (inc, libdir))
        return [inc], [libdir], ["openblas"]
    cflags, libs = pkg_config("--cflags", "openblas"), pkg_config("--libs", "openblas")
    if cflags is None or libs is None:
        sys.exit(HOW_TO_GET_OPENBLAS)
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")]
    if not any(os.path.isfile(os.path.join(d, "cblas.h")) for d in include_dirs + ["/usr/include"]):
        sys.exit(HOW_TO_GET_OPENBLAS)
    return include_dirs, library_dirs, libraries


include_dirs, library_dirs, libraries = find_openblas()
sources = ["csrc/" + f for f in ("module.c", "net.c", "model.c", "train.c", "optim.c", "dense.c", "conv.c", "loss.c", "rng.c")]
headers = ["csrc/" + f for f in ("den_common.h", "den_blas.h", "net.h", "model.h", "optim.h", "dense.h", "conv.h", "loss.h", "rng.h")]

compile_args = ["-std=c11", "-O3", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
link_args = []
if os.environ.get("DEN_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
    compile_args += sanitize
    link_args += sanitize

setup(
    ext_modules=[
        Extension(
            "den._core",
            sources=sources,
            depends=headers,
            include_dirs=[numpy.get_include(), "csrc"] + include_dirs,
            library_dirs=library_dirs,
            runtime_library_dirs=library_dirs,  # load the OpenBLAS we compiled against
            libraries=libraries + ["m"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ],
)
