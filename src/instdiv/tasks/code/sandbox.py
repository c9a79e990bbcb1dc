"""Run code a model wrote, and its tests, in a separate and limited process.

Each program runs in its own Python process (`python -I -S`, so no site packages and no PYTHON* variables)
with an empty environment, in a fresh temporary directory, in a new process group; the child lowers its
own CPU, memory, file-size and process limits and refuses, through an audit hook, to start processes, send
signals, open sockets, load C libraries or write outside its directory (sandbox_runner.py beside this file). The
parent enforces a wall-clock timeout and kills the whole process group at the end, whatever happened.
When the suite runs as root and `nobody` can run this interpreter, the child also drops to `nobody`, so that
the process limit applies and file permissions protect the rest of the machine.

These are process-level limits for buggy programs from small models, not a security boundary against a
determined attacker: for that, run the suite itself in a container or VM without network.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
NOBODY = 65534
STATUSES = ("passed", "failed", "error", "syntax", "timeout", "memory", "blocked", "crashed")


@dataclass(frozen=True)
class Limits:
    seconds: float = 5.0  # wall clock, interpreter start included
    cpu_seconds: int = 2
    memory_mb: int = 512  # address space: the interpreter itself takes ~30
    file_mb: int = 1  # the largest file it may write (in its own directory)
    processes: int = 256  # RLIMIT_NPROC, per user: a backstop behind the audit hook's ban on fork


@dataclass(frozen=True)
class Result:
    status: str  # one of STATUSES
    detail: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def parses(program: str) -> bool:
    """Whether the text is syntactically valid Python (parsing runs nothing)."""
    try:
        ast.parse(program)
    except (SyntaxError, ValueError):
        return False
    return True


def run(program: str, test: str, limits: Limits = Limits()) -> Result:
    """Run `program`, then `test` (asserts) in the same namespace, in a sandboxed process."""
    start = time.perf_counter()
    nonce = secrets.token_hex(16)
    drop = _can_drop()
    with tempfile.TemporaryDirectory(prefix="instdiv-sandbox-") as root:
        if drop:
            os.chown(root, NOBODY, NOBODY)
        job = json.dumps({"program": program, "test": test, "nonce": nonce, "root": root,
                          "limits": asdict(limits)})
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(RUNNER)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root, env={},
                                start_new_session=True, close_fds=True,
                                **({"user": NOBODY, "group": NOBODY, "extra_groups": []} if drop else {}))
        try:
            out, err = proc.communicate(job.encode(), timeout=limits.seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
        if timed_out:
            proc.communicate()
            return Result("timeout", f"over {limits.seconds} s of wall clock", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(nonce + " "):
            verdict = json.loads(line[len(nonce) + 1:])
            return Result(verdict["status"], verdict["detail"], seconds)
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return Result("timeout", f"over {limits.cpu_seconds} s of CPU", seconds)
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    status = "memory" if "MemoryError" in tail[0] else "crashed"
    return Result(status, tail[0][:500], seconds)


@functools.cache
def _can_drop() -> bool:
    """Root can run children as `nobody` if that user may execute this interpreter (not under /root)."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], user=NOBODY, group=NOBODY,
                              extra_groups=[], env={}, cwd="/", capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_many(jobs: list[tuple[str, str]], limits: Limits = Limits(), workers: int | None = None,
             progress=None) -> list[Result]:
    """Sandboxed runs of (program, test) pairs in a pool of threads, each waiting on its own process."""
    workers = workers or max(1, os.cpu_count() or 1)
    results: list[Result | None] = [None] * len(jobs)
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(run, program, test, limits): i for i, (program, test) in enumerate(jobs)}
        for done, future in enumerate(futures, 1):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(done, len(jobs))
    return results
