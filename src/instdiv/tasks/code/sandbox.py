"""Run code a model wrote, and its tests, in a separate and limited process.

A warm sandbox process (`python -I -S`, so no site packages and no PYTHON* variables, with an empty
environment, in a temporary directory and a new session) forks one child per program
(sandbox_runner.py beside this file): the child cuts its ways back to the suite, enters a fresh directory,
lowers its own CPU, memory, file-size and process limits and refuses, through an audit hook, to start
processes, send signals, open sockets, load C libraries or write outside its directory. The warm process
enforces the wall-clock limit and kills the child's whole process group at the end, whatever happened; the
suite in turn kills and replaces a warm process that stops answering. Forking skips the ~20 ms of interpreter
start-up a fresh process per program paid. When the suite runs as root and `nobody` can run this
interpreter, the warm process and its children run as `nobody`, so that the process limit applies and file
permissions protect the rest of the machine.

These are process-level limits for buggy programs from small models, not a security boundary against a
determined attacker: for that, run the suite itself in a container or VM without network.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import queue
import secrets
import select
import shutil
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


class Server:
    """One warm sandbox process; `run` sends it a job and waits for its verdict."""

    def __init__(self):
        self.drop = _can_drop()
        self.proc: subprocess.Popen | None = None
        self.root = ""

    def _start(self) -> subprocess.Popen:
        self.root = tempfile.mkdtemp(prefix="instdiv-sandbox-")
        if self.drop:
            os.chown(self.root, NOBODY, NOBODY)
        return subprocess.Popen([sys.executable, "-I", "-S", "-B", str(RUNNER)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.root, env={},
                                start_new_session=True, close_fds=True,
                                **({"user": NOBODY, "group": NOBODY, "extra_groups": []} if self.drop else {}))

    def run(self, program: str, test: str, limits: Limits) -> Result:
        start = time.perf_counter()
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self.proc = self._start()
        job = {"program": program, "test": test, "nonce": secrets.token_hex(16), "limits": asdict(limits)}
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            # The warm process answers within the wall-clock limit; allow for its own start and clean-up.
            ready, _, _ = select.select([self.proc.stdout], [], [], limits.seconds + 10)
            line = self.proc.stdout.readline() if ready else b""
            verdict = json.loads(line)
        except (OSError, ValueError):  # it died or hung: replace it, and count the program as the cause
            self.close()
            return Result("crashed", "the sandbox process stopped answering", time.perf_counter() - start)
        return Result(verdict["status"], verdict["detail"], time.perf_counter() - start)

    def close(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc.pid)
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                stream.close()
            self.proc = None
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = ""


def run(program: str, test: str, limits: Limits = Limits()) -> Result:
    """Run `program`, then `test` (asserts) in the same namespace, in a sandboxed process."""
    return run_many([(program, test)], limits, workers=1)[0]


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
    """Sandboxed runs of (program, test) pairs on a pool of warm sandbox processes, one per worker thread."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    servers: queue.SimpleQueue[Server] = queue.SimpleQueue()
    started = [Server() for _ in range(workers)]
    for server in started:
        servers.put(server)

    def one(job: tuple[str, str]) -> Result:
        server = servers.get()
        try:
            return server.run(*job, limits)
        finally:
            servers.put(server)

    results: list[Result | None] = [None] * len(jobs)
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = {pool.submit(one, job): i for i, job in enumerate(jobs)}
            for done, future in enumerate(futures, 1):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(done, len(jobs))
    finally:
        for server in started:
            server.close()
    return results
