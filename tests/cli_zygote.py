"""The project's console scripts started by forking a process that has already imported them.

A `gru-mm-*` process spends about 5 s of CPU importing torch, Lightning, MLflow and Hydra before it does
anything; the test suite starts about 200 of them, which on 2 cores was most of `make test`. The zygote
(this file run as a script) imports the entry points once, then forks one child per command. The child
becomes the command: the request's argv, environment, working folder, stdout and stderr; the console
script itself runs as `__main__` (`runpy`), so what a user's process runs is what runs here, from
`main()` on; multiprocessing's spawn and Lightning's DDP launcher re-run the real script path. It exits
as the interpreter does: non-daemon threads joined, atexit handlers run, streams flushed.

What a fork cannot change falls back to a fresh interpreter (`needs_fresh_interpreter`): variables read
when torch or the C runtime loads (thread counts, the allocator, LD_PRELOAD) and Python's start-up options.

    cli_zygote.run([BIN / "gru-mm-train", ...], env=..., cwd=...)    # a CompletedProcess
    cli_zygote.popen([sys.executable, "-m", "gru_mm.train", ...], env=..., cwd=..., log=path)  # Popen-like
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow_template

BIN = Path(sys.executable).parent
# read when a library loads or the interpreter starts, not when a command runs
_LOAD_TIME = ("OMP_", "MKL_", "KMP_", "MALLOC_", "LD_", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
              "PYTHONWARNINGS", "PYTHONSTARTUP", "PYTHONHOME", "ONEDNN_", "DNNL_", "CUDA_",
              "TORCH_")  # fmt: skip
_ENTRY_MODULES = ("gru_mm.train", "gru_mm.eval", "gru_mm.predict", "gru_mm.validate_data", "gru_mm.bench.cli")
# What a training run imports only when it gets there (MLflow's sqlite store and its migrations, system
# metrics, torchaudio, ...): about 1.2 s of CPU in every forked run that logs to a store, imported once here
# instead. Best effort: a module that fails to import here is imported (and fails) in the child as before.
_WARM_MODULES = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.db.utils",
    "mlflow.system_metrics.system_metrics_monitor",
    "mlflow.tracing.processor.otel",
    "mlflow.utils.name_utils",
    "alembic.command",
    "alembic.runtime.migration",
    "sqlalchemy.dialects.sqlite",
    "torchaudio",
    "torchvision",
    "git",
)


def needs_fresh_interpreter(env: dict[str, str], base: dict[str, str]) -> bool:
    """True when `env` differs from the zygote's own environment in a variable a fork cannot apply."""
    keys = {k for k in env.keys() | base.keys() if k.startswith(_LOAD_TIME)}
    return any(env.get(k) != base.get(k) for k in keys)


class ForkedProcess:
    """The part of subprocess.Popen the tests use, for a child of the zygote."""

    def __init__(self, args: list[str], conn: socket.socket):
        self.args, self._conn, self._buffer = args, conn, b""
        self.pid = int(self._line(None))
        self.returncode: int | None = None

    def _line(self, timeout: float | None) -> str:
        """The zygote's next line: the child's pid, then its exit code (negative: killed by that signal)."""
        self._conn.settimeout(timeout)
        while b"\n" not in self._buffer:
            chunk = self._conn.recv(64)
            if not chunk:
                raise RuntimeError(f"the CLI zygote closed the connection ({self.args[0]})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(0.0))
                self._conn.close()
            except (TimeoutError, BlockingIOError):
                return None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(timeout))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
            self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """A zygote process for this test session (started on first use, stopped at exit)."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="gru-mm-zygote-")
        self.address = os.path.join(self._dir, "socket")
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"  # its children write through, as run_cli's processes do
        log = open(os.path.join(self._dir, "zygote.log"), "w")  # noqa: SIM115 (the zygote's own output)
        self._proc = subprocess.Popen(
            [sys.executable, __file__, self.address],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 300
        while not os.path.exists(self.address):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the CLI zygote did not start: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return Path(self._dir, "zygote.log").read_text()[-3000:]

    def popen(self, command: list[str], env: dict[str, str], cwd: str | Path, stdout: int, stderr: int,
              new_session: bool = False) -> ForkedProcess:  # fmt: skip
        """A child running `command` (see `forkable`); stdout/stderr are file descriptors to write to."""
        request = {"argv": [str(c) for c in command], "env": env, "cwd": str(cwd), "new_session": new_session}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.address)
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [stdout, stderr])
        return ForkedProcess([str(c) for c in command], conn)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)
        shutil.rmtree(self._dir, ignore_errors=True)


_SHARED: Zygote | None = None


def forkable(command: list[str]) -> bool:
    """A console script of this environment (`BIN/gru-mm-train ...`) or `python -m module ...`."""
    first = str(command[0])
    if first == sys.executable:
        return len(command) > 2 and command[1] == "-m"
    return Path(first).parent == BIN and Path(first).name.startswith("gru-mm-")


def _zygote_for(command: list[str], env: dict[str, str]) -> Zygote | None:
    zygote = shared() if forkable(command) else None
    return zygote if zygote is not None and not needs_fresh_interpreter(env, zygote.env) else None


def run(command: list[str], *, env: dict[str, str], cwd: str | Path, timeout: float | None = None):
    """subprocess.run(command, capture_output=True, text=True, ...), forked from the zygote when it can be;
    the run's new local MLflow store starts as a copy of an empty one (tests/mlflow_template.py)."""
    mlflow_template.seed(command, env)
    zygote = _zygote_for(command, env)
    if zygote is None:
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = zygote.popen(command, env, cwd, out.fileno(), err.fileno())
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            command, code, out.read().decode(errors="replace"), err.read().decode(errors="replace")
        )


def popen(command: list[str], *, env: dict[str, str], cwd: str | Path, log: Path | None = None,
          new_session: bool = False):  # fmt: skip
    """subprocess.Popen(command, ...) with stdout and stderr into the file `log` (or nowhere), forked from
    the zygote when it can be; `new_session` as Popen's start_new_session. The store as in `run`."""
    mlflow_template.seed(command, env)
    zygote = _zygote_for(command, env)
    with open(log or os.devnull, "w") as out:  # a child has its own copy of the descriptor
        if zygote is None:
            return subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=new_session)  # fmt: skip
        return zygote.popen(command, env, cwd, out.fileno(), out.fileno(), new_session)


def shared() -> Zygote | None:
    """This test process's zygote, started on first use; None when GRU_MM_TEST_FORK=0 asks for a fresh
    interpreter per command (to rule the zygote out when a CLI test fails)."""
    global _SHARED
    if os.environ.get("GRU_MM_TEST_FORK", "1") == "0":
        return None
    if _SHARED is None:
        import atexit

        _SHARED = Zygote()
        atexit.register(_SHARED.close)
    return _SHARED


# ------------------------------------------------------------------ the zygote process itself


def _become(request: dict, fds: list[int]) -> None:
    """In the forked child: turn into the requested command and exit as the interpreter would."""
    import atexit
    import runpy
    import threading
    import traceback

    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    before = set(os.environ.get("PYTHONPATH", "").split(os.pathsep))
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    module = argv[2] if argv[0] == sys.executable else None
    # sys.argv and sys.path as a fresh interpreter has them: the script's folder (or, with -m, the working
    # folder) first, then PYTHONPATH
    sys.argv = [argv[0], *argv[3:]] if module else list(argv)
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in before]
    sys.path[:1] = [os.getcwd() if module else os.path.dirname(argv[0]), *map(os.path.abspath, extra)]
    code: object = 0
    try:
        if module:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        threading._shutdown()  # what interpreter exit does first: join non-daemon threads
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def _serve(address: str) -> None:
    import importlib

    for name in _ENTRY_MODULES:
        importlib.import_module(name)
    for name in _WARM_MODULES:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address + ".tmp")
    listener.listen(64)
    os.rename(address + ".tmp", address)  # clients wait for the name: it appears once imports are done
    children: dict[int, socket.socket] = {}
    parent = os.getppid()
    while os.getppid() == parent:  # the test session is gone: stop
        ready, _, _ = select.select([listener], [], [], 0.05)
        if ready:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
            while not message.endswith(b"\n"):
                message += conn.recv(1 << 20)
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                for other in children.values():
                    other.close()
                _become(json.loads(message), fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            children[pid] = conn
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):  # the test gave up on it
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()


if __name__ == "__main__":
    _serve(sys.argv[1])
