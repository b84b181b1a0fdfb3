"""Helpers shared by den's benchmarks: timing, worker subprocesses, machine and BLAS facts,
markdown output.

A benchmark here runs each contender in a worker subprocess of its own (the script calling
itself with --worker), so that each process loads only the BLAS library it is measuring and
so that environment variables read at library load time (OPENBLAS_CORETYPE, ...) can differ
between runs. Workers write one JSON document to a file named by the parent.
"""

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
README = os.path.join(HERE, "README.md")


def use_repo_den():
    """Import den from this checkout (the in-place build) before any installed copy."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


# ---- worker subprocesses -----------------------------------------------------------------------


def run_worker(script, worker_args, env):
    """Run `python script *worker_args --result FILE` with env and return the JSON it wrote to
    FILE, with "wall_s" (its run time) and "other_cpu_s" (CPU time that other processes on the
    machine took meanwhile) added. The worker's own output passes through; if it fails (its
    message is on stderr), the benchmark stops."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, script, *worker_args, "--result", out]
        t0, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_cpu_seconds()
        code = subprocess.run(cmd, env=env).returncode
        if code != 0:
            sys.exit("benchmark stopped: worker exited with %d: %s" % (code, shlex.join(cmd)))
        with open(out) as f:
            doc = json.load(f)
    doc["wall_s"] = time.monotonic() - t0
    doc["other_cpu_s"] = max(0.0, (machine_busy_seconds() - busy0) - (own_cpu_seconds() - own0))
    return doc


def machine_busy_seconds():
    """CPU seconds all processes have used since boot, summed over cores (/proc/stat); 0 where
    there is no /proc."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def write_result(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def log(msg):
    """Progress goes to stderr so that it never mixes with results."""
    print(msg, file=sys.stderr, flush=True)


# ---- facts about the machine and the libraries ---------------------------------------------------


def machine():
    """CPU model and core count (lscpu), OS and Python."""
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = re.search(r"^Model name:\s*(.+)$", out, re.M).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version()}


def git_revision():
    """Short commit of the checkout, with '+dirty' when csrc/ or den/ have uncommitted changes."""
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "csrc", "den", "setup.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return rev + ("+dirty" if dirty else "")


def blas_libraries():
    """The BLAS libraries loaded in this process, as threadpoolctl sees them."""
    import threadpoolctl

    keys = ("filepath", "internal_api", "version", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keys} for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def linked_library(extension, name):
    """Real path of the shared library `name` (e.g. 'libopenblas') that `extension` links, by ldd."""
    try:
        out = subprocess.run(["ldd", extension], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"^\s*%s\S*\s+=>\s+(\S+)" % re.escape(name), out, re.M)
    return os.path.realpath(m.group(1)) if m else None


# ---- output ----------------------------------------------------------------------------------


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def command_line():
    """The command that is running, as one could type it again from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    return shlex.join(["python", script, *sys.argv[1:]])


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def update_readme_block(name, title, intro, block):
    """Put `block` between the <!-- name:begin --> and <!-- name:end --> markers of
    benchmarks/README.md. Text outside the markers is kept; a README or section that does not
    exist yet is created as '## title', `intro`, then the markers."""
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    text = open(README).read() if os.path.exists(README) else "# Benchmarks\n"
    generated = "%s\n%s\n%s" % (begin, block.strip(), end)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## %s\n\n%s\n\n%s\n" % (title, intro.strip(), generated)
    with open(README, "w") as f:
        f.write(text)
