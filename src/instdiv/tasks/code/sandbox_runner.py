"""Runs inside the sandbox's child process (started by instdiv.sandbox, never imported by the suite).

Reads a job {program, test, nonce, root, limits} as JSON on stdin, lowers its own resource limits, installs
an audit hook that refuses process creation, signals, sockets, ctypes and writes outside `root`, then runs
the program and its test in a fresh namespace. The verdict is the last stdout line starting with the nonce,
so whatever the program prints cannot pass for it.
"""

import json
import os
import resource
import sys

job = json.loads(sys.stdin.read())
root = os.path.realpath(job["root"])
limits = job["limits"]
mb = 1 << 20
resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2)
resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mb,) * 2)
resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

_REFUSED_PREFIXES = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                     "os.kill", "os.killpg", "os.system", "os.startfile", "pty.", "resource.setrlimit",
                     "os.chdir", "os.setuid")
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                "os.link", "os.symlink", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path) -> bool:
    if isinstance(path, int):  # an open file descriptor
        return True
    full = os.path.realpath(os.path.join(root, os.fsdecode(path)))
    return full == root or full.startswith(root + os.sep)


def _hook(event, args):
    if event.startswith(_REFUSED_PREFIXES):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writes = (mode is not None and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writes and path is not None and not _inside(path):
            raise PermissionError(f"sandbox: writing {path} outside the sandbox directory")
    elif event in _PATH_EVENTS:
        if any(isinstance(a, (str, bytes, os.PathLike)) and not _inside(a) for a in args[:2]):
            raise PermissionError(f"sandbox: {event} outside the sandbox directory")


def _verdict(status: str, detail: str = "") -> None:
    sys.stdout.flush()
    sys.__stdout__.write(f"\n{job['nonce']} {json.dumps({'status': status, 'detail': detail[:500]})}\n")
    sys.__stdout__.flush()


os.chdir(root)
sys.addaudithook(_hook)
namespace = {"__name__": "__sandbox__"}
try:
    exec(compile(job["program"], "<program>", "exec"), namespace)
    exec(compile(job["test"], "<test>", "exec"), namespace)
except SyntaxError as exc:
    _verdict("syntax", f"{exc.msg} (line {exc.lineno})")
except AssertionError as exc:
    _verdict("failed", str(exc))
except MemoryError:
    _verdict("memory", "memory limit reached")
except PermissionError as exc:
    _verdict("blocked", str(exc))
except BaseException as exc:  # noqa: BLE001 - any failure of untrusted code is a verdict, SystemExit included
    _verdict("error", f"{type(exc).__name__}: {exc}")
else:
    _verdict("passed")
