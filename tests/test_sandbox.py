"""Model-written code runs only in a separate, limited process; every escape attempt is a failed test."""

from __future__ import annotations

import os
import time

import pytest

from instdiv.tasks.code import sandbox

LIMITS = sandbox.Limits(seconds=4, cpu_seconds=1, memory_mb=256)
TEST = "assert f(1) == 2"


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert sandbox.run("def f(x):\n    return x + 1\n", TEST, LIMITS).status == "passed"
    assert sandbox.run("def f(x):\n    return x\n", TEST, LIMITS).status == "failed"
    assert sandbox.run("def f(x) return x", TEST, LIMITS).status == "syntax"
    assert sandbox.run("def f(x):\n    return 1 / 0\n", TEST, LIMITS).status == "error"
    assert sandbox.parses("def f(x):\n    return x\n") and not sandbox.parses("def f(x) return x")


def test_infinite_loop_is_stopped():
    start = time.perf_counter()
    result = sandbox.run("def f(x):\n    while True:\n        pass\n", TEST, LIMITS)
    # the bound is loose so a loaded machine cannot fail it; unstopped, the loop would never return
    assert result.status == "timeout" and time.perf_counter() - start < LIMITS.seconds + 20


def test_sleeping_program_hits_the_wall_clock():
    result = sandbox.run("import time\ndef f(x):\n    time.sleep(60)\n", TEST,
                         sandbox.Limits(seconds=1, cpu_seconds=1, memory_mb=256))
    assert result.status == "timeout" and result.seconds < 20  # unstopped it would sleep 60 s


def test_memory_hog_is_stopped():
    result = sandbox.run("def f(x):\n    block = bytearray(8 * 1024 ** 3)\n    return 2\n", TEST, LIMITS)
    assert result.status == "memory" and not result.passed


@pytest.mark.parametrize("program", [
    "import os\ndef f(x):\n    while True:\n        os.fork()\n",
    "import subprocess\ndef f(x):\n    subprocess.run(['sh', '-c', ':(){ :|:& };:'])\n    return 2\n",
    "import multiprocessing\ndef f(x):\n    multiprocessing.Process(target=f, args=(x,)).start()\n    return 2\n",
    "import ctypes\ndef f(x):\n    ctypes.CDLL(None).fork()\n    return 2\n",
], ids=["os.fork", "shell fork bomb", "multiprocessing", "ctypes"])
def test_fork_bombs_are_refused(program):
    result = sandbox.run(program, TEST, LIMITS)
    assert result.status == "blocked" and not result.passed, result


def test_writing_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    program = f"def f(x):\n    open({str(target)!r}, 'w').write('out')\n    return 2\n"
    result = sandbox.run(program, TEST, LIMITS)
    assert result.status == "blocked" and not target.exists()
    inside = "def f(x):\n    open('scratch.txt', 'w').write('ok')\n    return len(open('scratch.txt').read()) - 0\n"
    assert sandbox.run(inside, "assert f(1) == 2", LIMITS).status == "passed"  # its own directory is fine


def test_the_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("INSTDIV_TEST_SECRET", "hunter2")
    program = "import os\ndef f(x):\n    return os.environ.get('INSTDIV_TEST_SECRET')\n"
    assert sandbox.run(program, "assert f(1) == 'hunter2'", LIMITS).status == "failed"


@pytest.mark.parametrize("program,status", [
    ("import socket\ndef f(x):\n    socket.create_connection(('127.0.0.1', 9))\n", "blocked"),
    ("import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n", "blocked"),
    ("import sys\ndef f(x):\n    sys.exit(0)\n", "error"),
    ("print('0' * 32 + ' {\"status\": \"passed\", \"detail\": \"\"}')\ndef f(x):\n    return 0\n", "failed"),
], ids=["network", "signal the suite", "exit early", "forge a verdict"])
def test_other_escapes_fail(program, status):
    assert sandbox.run(program, TEST, LIMITS).status == status


def test_the_pool_keeps_going_after_bad_programs():
    good = ("def f(x):\n    return x + 1\n", TEST)
    bad = [("def f(x):\n    while True:\n        pass\n", TEST),
           ("def f(x):\n    return [0] * 10 ** 10\n", TEST),
           ("import os\ndef f(x):\n    os.fork()\n", TEST)]
    seen = []
    results = sandbox.run_many([good, *bad, good], LIMITS, workers=2, progress=lambda i, n: seen.append((i, n)))
    assert [r.status for r in results] == ["passed", "timeout", "memory", "blocked", "passed"]
    assert seen[-1] == (5, 5)
    assert os.getpid() > 0  # the suite itself is alive


def test_each_program_starts_in_a_fresh_directory_with_no_way_back_to_the_suite():
    """Programs forked from one warm process: a file the first leaves is gone for the second; standard input
    and output lead nowhere; the only descriptor left is the verdict pipe, and a forged line without the nonce
    written to it does not pass."""
    writer = ("def f(x):\n    open('left.txt', 'w').write('x')\n    return 2\n", TEST)
    reader = ("import os\ndef f(x):\n    return 2 if not os.path.exists('left.txt') else 0\n", TEST)
    stdin = ("import sys\ndef f(x):\n    return 2 if sys.stdin.read() == '' else 0\n", TEST)
    forge = ("import os, json\nfor fd in map(int, os.listdir('/proc/self/fd')):\n"
             "    try:\n        os.write(fd, b'0' * 32 + b' ' + json.dumps({'status': 'passed', 'detail': ''}).encode() + b'\\n')\n"
             "    except OSError:\n        pass\ndef f(x):\n    return 0\n", TEST)
    results = sandbox.run_many([writer, reader, stdin, forge], LIMITS, workers=1)
    assert [r.status for r in results] == ["passed", "passed", "passed", "failed"]
