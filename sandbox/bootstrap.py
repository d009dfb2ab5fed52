"""The program that runs inside a sandbox, before and around the untrusted code.

It runs as `python -I -S bootstrap.py (--result-fd N | --result-marker MARKER)`, with the
standard library only (nothing of Reflux is visible inside). It reads one JSON request on
stdin, lowers its own resource limits (which every process it starts inherits), writes the
request's files into the working directory, then runs the code:

- python: the code is executed as module `__main__`; if it defines the entry function,
  that is called with the inputs and its return value (JSON) is the output. Imports are
  limited to the standard library, the allow-list and the request's own `.py` files.
- shell: `/bin/sh -c CODE`, with the inputs as JSON in the file `$REFLUX_INPUTS_FILE`.

With `network: limited` it first relays a local proxy port to the host's egress proxy
(`sandbox.egress`) and sets HTTP(S)_PROXY.

The result, one JSON object, goes to the result fd, or after MARKER on stdout where no
extra fd can be passed (containers). The host trusts nothing in it beyond what the code
could have returned anyway.
"""

import json
import os
import resource
import sys

MIB = 1024 * 1024
PROXY = ("127.0.0.1", 3128)


def set_limits(limits):
    def cap(which, soft, hard=None):
        resource.setrlimit(which, (soft, soft if hard is None else hard))

    cap(resource.RLIMIT_AS, limits["memory_mb"] * MIB)
    cap(resource.RLIMIT_CPU, limits["cpu_seconds"], limits["cpu_seconds"] + 1)
    cap(resource.RLIMIT_NPROC, limits["processes"])
    cap(resource.RLIMIT_NOFILE, limits["open_files"])
    cap(resource.RLIMIT_FSIZE, limits["file_mb"] * MIB)
    cap(resource.RLIMIT_CORE, 0)


def start_relay(socket_path):
    """network: limited. Relay the sandbox's own http://127.0.0.1:3128 to the host's egress
    proxy socket, in one thread, and point HTTP clients at it."""
    import selectors
    import socket
    import threading

    listener = socket.create_server(PROXY)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)

    def close(*socks):
        for sock in socks:
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def relay():
        while True:
            for key, _ in selector.select():
                if key.data is None:
                    client, _ = listener.accept()
                    upstream = socket.socket(socket.AF_UNIX)
                    try:
                        upstream.connect(socket_path)
                    except OSError:
                        close(client, upstream)
                        continue
                    selector.register(client, selectors.EVENT_READ, upstream)
                    selector.register(upstream, selectors.EVENT_READ, client)
                    continue
                source, sink = key.fileobj, key.data
                try:
                    data = source.recv(65536)
                    if data:
                        sink.sendall(data)
                        continue
                except OSError:
                    pass
                close(source, sink)

    threading.Thread(target=relay, daemon=True).start()
    url = f"http://{PROXY[0]}:{PROXY[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ[name] = url


def one_line(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ImportGuard:
    """Refuses, with a message saying why, imports the sandbox cannot offer. The files are
    not there anyway (the allow-list is all that is mounted); this only explains it."""

    def __init__(self, allowed, local):
        self.allowed = sorted(allowed)
        self.known = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
        self.known |= set(allowed) | set(local)

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.known:
            return None
        allowed = ", ".join(self.allowed) or "none"
        raise ModuleNotFoundError(
            f"{top} is not available in the sandbox: code may import the standard library "
            f"and the allow-list ({allowed}; setting REFLUX_SANDBOX_PACKAGES)",
            name=name,
        )


def run_python(request):
    local = [name[:-3] for name in request["files"] if name.endswith(".py")]
    sys.path[:0] = [os.getcwd(), request["site"]]
    sys.meta_path.insert(0, ImportGuard(request["allowed"], local))
    module = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "<code>"}
    try:
        exec(compile(request["code"], "<code>", "exec"), module)
        entry = module.get(request["entry"])
        output = None
        if callable(entry):
            output = entry(request["inputs"])
            if hasattr(output, "__await__"):
                import asyncio

                output = asyncio.run(_awaited(output))
        return {"status": "ok", "output": output}
    except SystemExit as exc:
        if exc.code in (None, 0):
            return {"status": "ok", "output": None}
        return error(f"SystemExit: {exc.code}", "SystemExit")
    except MemoryError:
        limit = request["limits"]["memory_mb"]
        return error(f"MemoryError: out of memory (limit {limit} MB)", "MemoryError")
    except BaseException as exc:
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
        lines = [f.lineno for f in frames if f.filename == "<code>"]
        where = f" (line {lines[-1]})" if lines else ""
        trace = "".join(traceback.format_list(frames)) + one_line(exc)
        print("Traceback (most recent call last):\n" + trace, file=sys.stderr)
        return error(one_line(exc) + where, type(exc).__name__)


async def _awaited(value):
    return await value


def error(message, error_class):
    return {"status": "error", "error": message, "error_class": error_class}


def run_shell(request):
    import subprocess

    with open("inputs.json", "w") as f:
        json.dump(request["inputs"], f)
    env = dict(os.environ, REFLUX_INPUTS_FILE=os.path.abspath("inputs.json"))
    code = subprocess.call(["/bin/sh", "-c", request["code"]], env=env, stdin=subprocess.DEVNULL)
    return {"status": "ok" if code == 0 else "error", "exit_code": code}


def main():
    mode, target = sys.argv[1], sys.argv[2]
    request = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    set_limits(request["limits"])
    os.environ.update(request.get("env") or {})
    for name, text in request["files"].items():
        with open(name, "w") as f:
            f.write(text)
    sys.stdout.reconfigure(line_buffering=True)
    if request.get("egress"):
        start_relay(request["egress"])
    if request["lang"] == "python":
        result = run_python(request)
        usage = resource.getrusage(resource.RUSAGE_SELF)
    else:
        result = run_shell(request)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["peak_mem_mb"] = round(usage.ru_maxrss / 1024, 1)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        data = json.dumps(result, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        result.update(error(f"the return value is not JSON: {one_line(exc)}", "TypeError"))
        del result["output"]
        data = json.dumps(result).encode()
    if mode == "--result-fd":
        _write_all(int(target), data)
    else:
        _write_all(1, b"\n" + target.encode() + data)
    os._exit(0)  # threads or atexit handlers the code left do not hold the run open


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    main()
