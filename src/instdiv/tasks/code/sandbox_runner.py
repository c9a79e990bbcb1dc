"""The sandbox's warm process (started by instdiv.tasks.code.sandbox as `python -I -S -B` on this file, never
imported by the suite).

It reads jobs {program, test, nonce, limits} as JSON lines on stdin and answers each with one JSON line
{status, detail}. Every job runs in a child forked from this process, which has already paid the ~20 ms of
interpreter start-up: the child starts its own session, cuts every way back to the suite (stdin from
/dev/null, stdout to /dev/null, stderr to a file of its own, every other descriptor closed but the verdict
pipe), enters a fresh directory, lowers its CPU, memory, file-size and process limits and installs an audit
hook that refuses process creation, signals, sockets, ctypes and writes outside that directory; then it runs
the program and its test in a fresh namespace. This process waits on the verdict pipe until the wall-clock
limit, then kills the child's whole process group and removes its directory, whatever happened. The
verdict is the line starting with the nonce, so whatever the program prints cannot pass for it.
"""

import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time

MB = 1 << 20
_REFUSED_PREFIXES = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                     "os.kill", "os.killpg", "os.system", "os.startfile", "pty.", "resource.setrlimit",
                     "os.chdir", "os.setuid")
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _confine(root: str, limits: dict, verdict_fd: int) -> None:
    """In the child, before any of the program runs."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(os.path.join(root, ".stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(err, 2)
    os.closerange(3, verdict_fd)
    os.closerange(verdict_fd + 1, 1 << 16)
    os.chdir(root)
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * MB,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * MB,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def inside(path) -> bool:
        if isinstance(path, int):  # an open file descriptor
            return True
        full = os.path.realpath(os.path.join(root, os.fsdecode(path)))
        return full == root or full.startswith(root + os.sep)

    def hook(event, args):
        if event.startswith(_REFUSED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path} outside the sandbox directory")
        elif event in _PATH_EVENTS:
            if any(isinstance(a, (str, bytes, os.PathLike)) and not inside(a) for a in args[:2]):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")

    sys.addaudithook(hook)


def _child(job: dict, root: str, verdict_fd: int) -> None:
    _confine(root, job["limits"], verdict_fd)
    verdict = os.fdopen(verdict_fd, "w")
    nonce = job["nonce"]

    def say(status: str, detail: str = "") -> None:
        verdict.write(f"{nonce} {json.dumps({'status': status, 'detail': detail[:500]})}\n")
        verdict.flush()

    namespace = {"__name__": "__sandbox__"}
    program, test = job["program"], job["test"]
    job.clear()  # the nonce and the test are not left for the program to read
    try:
        exec(compile(program, "<program>", "exec"), namespace)
        exec(compile(test, "<test>", "exec"), namespace)
    except SyntaxError as exc:
        say("syntax", f"{exc.msg} (line {exc.lineno})")
    except AssertionError as exc:
        say("failed", str(exc))
    except MemoryError:
        say("memory", "memory limit reached")
    except PermissionError as exc:
        say("blocked", str(exc))
    except BaseException as exc:  # noqa: BLE001 - any failure of untrusted code is a verdict, SystemExit included
        say("error", f"{type(exc).__name__}: {exc}")
    else:
        say("passed")


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):  # the group; the child itself if it had not yet started its session
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _serve(job: dict, base: str) -> dict:
    limits = job["limits"]
    root = tempfile.mkdtemp(prefix="job-", dir=base)
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read_fd)
            _child(job, root, write_fd)
        except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
            code = 70
        os._exit(code)
    os.close(write_fd)
    out, timed_out = b"", False
    while True:
        remaining = limits["seconds"] - (time.monotonic() - start)
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            out += chunk
    os.close(read_fd)
    _kill(pid)
    _, status = os.waitpid(pid, 0)
    try:
        with open(os.path.join(root, ".stderr"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            err = f.read().decode(errors="replace")
    except OSError:
        err = ""
    shutil.rmtree(root, ignore_errors=True)
    if timed_out:
        return {"status": "timeout", "detail": f"over {limits['seconds']} s of wall clock"}
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(job["nonce"] + " "):
            return json.loads(line[len(job["nonce"]) + 1:])
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL):
        return {"status": "timeout", "detail": f"over {limits['cpu_seconds']} s of CPU"}
    tail = err.strip().splitlines()[-1:] or [f"exit status {os.waitstatus_to_exitcode(status)}"]
    return {"status": "memory" if "MemoryError" in tail[0] else "crashed", "detail": tail[0][:500]}


def main() -> None:
    base = os.getcwd()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # the suite went away: end quietly
    for line in sys.stdin:
        job = json.loads(line)
        start = time.monotonic()
        result = _serve(job, base)
        result["seconds"] = time.monotonic() - start
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
