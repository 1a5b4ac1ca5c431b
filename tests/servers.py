"""Inference servers for the tests: llama.cpp's server on the embedded GGUF, and a stub for fault cases.

`LlamaServer.start()` runs `python -m llama_cpp.server` (llama-cpp-python[server]) on 127.0.0.1 at a
free port, serving the embedded SmolLM2-135M-Instruct GGUF under the name `smollm2` and requiring an
API key, and waits until `GET /v1/models` answers. `StubServer` is an `http.server` in a thread that
answers every chat completion as its `mode` says (slow, 500, garbage, echo of the request's headers,
or a fixed reply, optionally after failing some requests): only for the fault cases a real server
will not produce on demand.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

MODEL = "smollm2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """A llama.cpp server process (see the module docstring); `url` is its /v1 root, `key` its API key."""

    def __init__(self, process: subprocess.Popen, port: int, key: str):
        self.process, self.port, self.key = process, port, key
        self.url = f"http://127.0.0.1:{port}/v1"

    @classmethod
    def start(cls, *, threads: int = 1, ready_s: float = 60.0) -> LlamaServer:
        from agora.models import embedded_gguf

        port, key = free_port(), "sk-agora-test-" + secrets.token_hex(12)
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_gguf()),
            "--model_alias",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_ctx",
            "2048",
            "--verbose",
            "False",
            "--api_key",
            key,
        ]
        # OpenMP's busy-waiting threads crawl on a shared CPU (x6 slower measured on 2 busy cores)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        server = cls(process, port, key)
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if requests.get(f"{server.url}/models", headers=server.headers, timeout=1).ok:
                    return server.smoke_tested()
            except requests.RequestException:
                pass
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"llama.cpp server not ready within {ready_s} s")

    def smoke_tested(self) -> LlamaServer:
        """This server after one chat completion of a few prompt tokens: a llama.cpp build that crashes
        while decoding (a native build on a CPU its kernels mishandle) is told here, once, not as a
        refused connection in every test that uses the server."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2}
        try:
            requests.post(f"{self.url}/chat/completions", json=body, headers=self.headers, timeout=60)
        except requests.RequestException:
            pass
        if self.process.poll() is not None:
            code = self.process.returncode
            raise RuntimeError(
                f"llama.cpp server died on its first completion (exit {code}): this llama-cpp-python build "
                "crashes on this CPU; `make setup` builds it with CMAKE_ARGS=-DGGML_NATIVE=OFF (see the Makefile)\n"
                + self.process.stderr.read().decode()[-2000:]
            )
        return self

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process.stderr.close()


def completion(text: str) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 3},
    }


class StubServer:
    """An OpenAI-compatible stub in a thread. `mode`: 'reply' (answers `reply`), 'slow' (sleeps `delay` s,
    then replies), '500', 'garbage' (200 with a body that is not JSON), 'echo' (500 whose body repeats the
    request's Authorization header). The first `fail_first` requests get a 500 whatever the mode. It records the
    bodies it got and the most requests it held at once."""

    def __init__(self, mode: str = "reply", *, reply: str = "ACTION: WALK AWAY", delay: float = 0.0, fail_first=0):
        self.mode, self.reply, self.delay, self.fail_first = mode, reply, delay, fail_first
        self.bodies: list[dict] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def send(self, status: int, body: str | bytes, kind: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.send(200, json.dumps({"object": "list", "data": [{"id": "stub"}]}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.bodies.append(body)
                    count = len(stub.bodies)
                    stub.in_flight += 1
                    stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
                try:
                    if stub.delay:
                        time.sleep(stub.delay)
                    if count <= stub.fail_first or stub.mode == "500":
                        self.send(500, '{"error": "internal"}')
                    elif stub.mode == "garbage":
                        self.send(200, b"<html>\x00\xff not json", "text/html")
                    elif stub.mode == "echo":
                        self.send(500, json.dumps({"error": "bad", "authorization": self.headers["Authorization"]}))
                    else:
                        self.send(200, json.dumps(completion(stub.reply)))
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
