"""Python that starts in milliseconds for the tests: a server that imports the heavy libraries once and forks a child
per command, and tests/zygote_python, a stand-in for the interpreter that hands its command to the server.

Every command the tests run (conftest.run), and every Python the project's own code starts from there through
sys.executable (export's converter and load check, compare_lora's recipe runs, gpu_check's and benchmark's workers),
would otherwise pay 5-10 s of imports (torch, transformers, Unsloth) on two cores: about half of the suite's time.

A child is a real process. It gets the stand-in's stdin, stdout and stderr (passed over the socket), its argv (a
script, -c CODE or -m MODULE), working directory and environment; its exit code or the signal that ended it becomes
the stand-in's. It starts from the server's imported libraries, as a fresh interpreter would after the same imports,
so there are two servers: "unsloth" (Unsloth first, then TRL, PEFT, transformers), for code that imports Unsloth,
as the recipes do first of all; and "plain" (torch, transformers, PEFT, datasets), for everything else, which never
runs with Unsloth's patches applied. Each imports common.startup before them, as every recipe and script does. An
environment variable can be read at import time, which happened before the fork: a command whose environment differs
from the server's (beyond RUNTIME_VARIABLES) gets a fresh interpreter.
"""
import json
import os
import select
import signal
import socket
import sys

# Variables read when used, not at import, or applied to the child here: they may differ from the server's.
RUNTIME_VARIABLES = {"PYTHONUNBUFFERED", "PYTHONPATH", "OMP_NUM_THREADS", "TINY_MODEL_CACHE", "PWD", "OLDPWD", "_",
                     "SHLVL", "COLUMNS", "LINES"}
# common.startup first, as every recipe and script imports it (it sets what torch reads as it loads); then Unsloth
# first, as recipes import it.
PRELOAD = {"unsloth": ["common.startup", "unsloth", "trl", "peft", "transformers", "datasets", "torch"],
           "plain": ["common.startup", "torch", "transformers", "peft", "datasets", "safetensors"]}


def child_environment(wanted: dict, before: dict, after: dict) -> dict | None:
    """The environment a fresh interpreter would have after the server's imports, started with `wanted`: None when
    `wanted` differs from what the server started with (`before`) in a variable read at import time. A variable the
    imports set (Unsloth sets a dozen) may come as it was before them or as they left it."""
    set_by_imports = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    for key in (set(wanted) | set(before)) - RUNTIME_VARIABLES:
        if key.startswith("ZYGOTE_"):
            continue
        allowed = {before.get(key), after.get(key)} if key in set_by_imports else {before.get(key)}
        if wanted.get(key) not in allowed:
            return None
    imported = {k: after[k] for k in set_by_imports if k in after and wanted.get(k) == before.get(k)}
    return {**wanted, **imported}


def child(request: dict, fds: list[int], keep_closed: list) -> None:
    """In the forked child: become the command; never returns."""
    import atexit
    import runpy
    import threading

    for sock in keep_closed:
        sock.close()
    os.setpgid(0, 0)  # its own process group: the server ends it, and what it started, if the stand-in is killed
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False, buffering=1)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                                       buffering=1)
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    if env.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    if env.get("OMP_NUM_THREADS", "").isdigit() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
    os.chdir(request["cwd"])
    sys.executable = request["python"]  # what this child starts through sys.executable goes through a server too
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    mode, *args = request["argv"]
    code = 0
    try:
        if mode == "-c":
            sys.argv, sys.path[0] = ["-c", *args[1:]], ""
            sys.path[1:1] = extra
            exec(compile(args[0], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif mode == "-m":
            sys.path[0] = os.getcwd()
            sys.path[1:1] = extra
            sys.argv = [args[0], *args[1:]]
            runpy.run_module(args[0], run_name="__main__", alter_sys=True)
        else:  # a script, or a directory with a __main__.py: sys.path[0] is then the directory itself, as python has it
            where = os.path.abspath(mode)
            sys.argv, sys.path[0] = [mode, *args], where if os.path.isdir(where) else os.path.dirname(where)
            sys.path[1:1] = extra
            runpy.run_path(mode, run_name="__main__")
    except SystemExit as stop:  # as the interpreter turns sys.exit(x) into an exit code
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # uncaught: the command's excepthook (the recipes': one line and exit 2), then exit 1
        sys.excepthook(*sys.exc_info())
        code = 1
    try:  # what the interpreter does at exit
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            raise ConnectionError("the stand-in left")
        data += more
    return json.loads(data), list(fds)


def send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the stand-in is gone; its child is ended below


def serve(path: str, flavour: str) -> None:
    import importlib
    before = dict(os.environ)
    for name in PRELOAD[flavour]:
        importlib.import_module(name)
    after = dict(os.environ)
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # the socket appears only when the server is ready
    running: dict[int, socket.socket | None] = {}  # child pid -> its stand-in's connection (None: stand-in gone)
    while os.getppid() == parent:
        readable, _, _ = select.select([listener, *filter(None, running.values())], [], [], 0.02)
        for sock in readable:
            if sock is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = receive(conn)
                except (ConnectionError, OSError, ValueError):
                    conn.close()
                    continue
                request["env"] = child_environment(request["env"], before, after)
                if len(fds) != 3 or request["env"] is None:
                    for fd in fds:
                        os.close(fd)
                    send(conn, {"fallback": True})
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    child(request, fds, [listener, conn, *filter(None, running.values())])
                for fd in fds:
                    os.close(fd)
                running[pid] = conn
                send(conn, {"pid": pid})
            else:  # a stand-in closed its connection before its child ended: it was killed, so is the child
                pid = next(p for p, c in running.items() if c is sock)
                if not sock.recv(1):
                    running[pid] = None
                    sock.close()
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                send(conn, {"code": os.waitstatus_to_exitcode(status)})
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
