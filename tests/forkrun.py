"""Run a console command in a new process without paying Python's imports every time.

The CLI tests run `mimi ...` dozens of times. A new interpreter spends ~3 s of a 2-core
machine importing torch and the codec before a command starts, which is most of each call on
the tiny test model. A zygote, started once per (preload, environment), imports those modules
and then forks one child per command. The child is a new process with its own pid, standard
streams, working directory, environment and exit status. It runs the console script's entry
point the way the installed script does (`sys.exit(main())`, `sys.argv[0]` the command's
name), then exits as the interpreter would: the SystemExit's status, atexit handlers, stream
flushes (the teardown of every module is left out: it has no effect outside the process and
costs ~1 s with torch loaded). What a test checks (exit status, stdout and stderr bytes, files
written) is the child's own.

Not for what must start from an interpreter that has imported nothing (lazy imports, a
module left unloaded): those tests run the real executable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Runs in the zygote: import the preload, then read one JSON request a line on fd 0; fork; the
# parent reports the child's pid, then its exit status, on fd 1 and reads the next request.
_ZYGOTE = r"""
import atexit, gc, importlib, io, json, os, sys, traceback
for _name in sys.argv[1:]:
    importlib.import_module(_name)
gc.freeze()  # the children's collections then leave the shared pages alone

def _serve():
    requests = io.BufferedReader(io.FileIO(0, "r", closefd=False))
    while True:
        line = requests.readline()
        if not line:
            os._exit(0)
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return req
        os.write(1, b"%d\n" % pid)
        _, status = os.waitpid(pid, 0)
        os.write(1, b"%d\n" % os.waitstatus_to_exitcode(status))

_req = _serve()
for _fd, (_path, _flags) in enumerate(((_req["stdin"], os.O_RDONLY), (_req["stdout"], os.O_WRONLY),
                                       (_req["stderr"], os.O_WRONLY))):
    _f = os.open(_path, _flags)
    os.dup2(_f, _fd)
    os.close(_f)
sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
sys.stdout = sys.__stdout__ = open(1, "w", closefd=False)
sys.stderr = sys.__stderr__ = open(2, "w", closefd=False, errors="backslashreplace", buffering=1)
os.chdir(_req["cwd"])
os.environ.clear()
os.environ.update(_req["env"])
sys.argv = _req["argv"]
_module, _func = _req["entry"].split(":")
try:
    sys.exit(getattr(importlib.import_module(_module), _func)())
except SystemExit as _exc:  # what the interpreter does with it
    _code = _exc.code
    if _code is not None and not isinstance(_code, int):
        print(_code, file=sys.stderr)
        _code = 1
except BaseException:
    traceback.print_exc()
    _code = 1
atexit._run_exitfuncs()
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.flush()
    except (OSError, ValueError):
        pass
os._exit(_code or 0)  # the rest of shutdown, freeing every module, only costs time (~1 s with torch)
"""


class _Zygote:
    """One warm interpreter (its preload imported, its environment fixed) that forks children."""

    def __init__(self, preload: tuple[str, ...], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE, *preload], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self.lock = threading.Lock()

    def run(self, request: dict, timeout: float) -> int:
        """Fork a child for `request`, wait for it (killed after `timeout` s); its exit status."""
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            pid = int(self.proc.stdout.readline())
            fired = threading.Event()

            def kill() -> None:
                fired.set()
                os.kill(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                line = self.proc.stdout.readline()
            finally:
                timer.cancel()
            if not line:
                raise RuntimeError(f"the zygote for {request['argv'][0]} died")
            if fired.is_set():
                raise subprocess.TimeoutExpired(request["argv"], timeout)
            return int(line)


_ZYGOTES: dict[tuple, _Zygote] = {}


def run_command(entry: str, argv: list[str], preload: tuple[str, ...], *, cwd: Path | None = None,
                input: bytes | None = None, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the console entry point `entry` ("module:function") with `argv` in a forked child.

    Args:
        entry: the console script's target, as in pyproject's `[project.scripts]`.
        argv: the command line, `argv[0]` the command's name.
        preload: modules the zygote imports before forking (none that the command may need
            unloaded).
        cwd, input, env: as for `subprocess.run`; `env` None means this process's.
        timeout: seconds before the child is killed and `subprocess.TimeoutExpired` raised.

    Returns:
        a CompletedProcess with the child's exit status and its stdout and stderr as bytes.
    """
    env = dict(os.environ if env is None else env)
    # libraries read their environment when imported (OMP_NUM_THREADS...): a zygote per
    # environment, but pytest's name of the running test changes with every test
    key = (preload, tuple(sorted((k, v) for k, v in env.items() if k != "PYTEST_CURRENT_TEST")))
    if key not in _ZYGOTES or _ZYGOTES[key].proc.poll() is not None:
        _ZYGOTES[key] = _Zygote(preload, env)
    with tempfile.TemporaryDirectory(prefix="forkrun-") as tmp:
        stdin, stdout, stderr = (os.path.join(tmp, name) for name in ("stdin", "stdout", "stderr"))
        Path(stdin).write_bytes(input or b"")
        Path(stdout).touch()
        Path(stderr).touch()
        code = _ZYGOTES[key].run({"entry": entry, "argv": argv, "cwd": str(cwd or os.getcwd()), "env": env,
                                  "stdin": stdin, "stdout": stdout, "stderr": stderr}, timeout)
        return subprocess.CompletedProcess(argv, code, Path(stdout).read_bytes(), Path(stderr).read_bytes())
