"""The stand-in for `python` that tests/zygote.py describes: it hands its command (argv, working directory,
environment, and its stdin, stdout and stderr) to a server, and exits as the command's process exits. Where no
server can run the command (another interpreter option, a changed environment, no server), it becomes the real
interpreter (ZYGOTE_REAL_PYTHON) with the same arguments. Standard library only: it starts in milliseconds."""
import json
import os
import re
import signal
import socket
import sys

UNSLOTH = re.compile(r"^\s*(import unsloth|from unsloth)", re.M)


def real_python(args):
    real = os.environ["ZYGOTE_REAL_PYTHON"]
    os.execv(real, [real, *args])


def flavour(args) -> str:
    """"unsloth" for code that imports Unsloth (itself, or a recipe or script that -c code runs), else "plain"."""
    if args[0] == "-m":
        return "plain"
    texts = []
    if args[0] == "-c":
        texts.append(args[1])
        for path in re.findall(r"(?:recipes|scripts)/\w+\.py", args[1]):
            texts.append(open(path, encoding="utf-8").read() if os.path.exists(path) else "")
    elif os.path.exists(args[0]):  # a script, or a directory run by its __main__.py (python dev/gpu_check)
        script = os.path.join(args[0], "__main__.py") if os.path.isdir(args[0]) else args[0]
        texts.append(open(script, encoding="utf-8", errors="replace").read() if os.path.isfile(script) else "")
    return "unsloth" if any(UNSLOTH.search(text) for text in texts) else "plain"


def main(args):
    runnable = bool(args) and (not args[0].startswith("-") or (args[0] in ("-c", "-m") and len(args) > 1))
    if not runnable:  # another interpreter option, or none: the real interpreter handles it
        real_python(args)
    path = os.environ.get(f"ZYGOTE_SOCKET_{flavour(args).upper()}")
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        request = {"argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "python": sys.argv[0]}
        data = (json.dumps(request) + "\n").encode()
        sent = socket.send_fds(conn, [data], [0, 1, 2])
        conn.sendall(data[sent:])
    except (OSError, TypeError):
        real_python(args)
    replies = conn.makefile("rb")
    reply = json.loads(replies.readline() or b'{"fallback": true}')
    if reply.get("fallback"):
        conn.close()
        real_python(args)
    pid = reply["pid"]
    def pass_on(number, frame):  # a signal to the stand-in goes to the command, as to a process of one's own
        try:
            os.killpg(pid, number)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, pass_on)
    line = replies.readline()
    code = json.loads(line)["code"] if line else 1
    if code < 0:  # ended by a signal: end the same way, so the caller sees it as it would have
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
