"""The openai engine's error handling against a real local HTTP server that injects faults.

The server speaks the OpenAI completions protocol on 127.0.0.1 and misbehaves on purpose (HTTP 500s, answers
later than the client's timeout, dropped connections, non-JSON bodies, HTTP 400), keyed by words in the
prompt. The happy path against a real model server (`vllm serve`) is in test_vllm.py.
"""

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from megatron_ipt.formats.wire import cook_context, parse_pred
from megatron_ipt.synthesis.engines import build_engine
from tools.synthesize import main


class FaultServer:
    def __init__(self, name="m", hold=0.0):
        self.attempts = defaultdict(list)  # context -> [monotonic time of each attempt]
        self.inflight = self.max_inflight = self.requests = 0
        self.lock = threading.Lock()
        self.hold = hold
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, payload):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                assert self.path == "/v1/models"
                self.reply(200, {"object": "list", "data": [{"id": name, "object": "model"}]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ctx = req["prompt"].rsplit("<CON> ", 1)[1].rsplit(" </CON>", 1)[0]
                with outer.lock:
                    outer.requests += 1
                    outer.attempts[ctx].append(time.monotonic())
                    n = len(outer.attempts[ctx])
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                try:
                    time.sleep(outer.hold)
                    if req["model"] != name or req.get("add_special_tokens") is not False:
                        return self.reply(400, {"error": "bad request body"})
                    if ctx.startswith("always500") or (ctx.startswith("500x2") and n <= 2):
                        return self.reply(500, {"error": "injected"})
                    if ctx.startswith("bad400"):
                        return self.reply(400, {"error": "prompt too long"})
                    if ctx.startswith("slow") and n == 1:
                        time.sleep(1.5)  # beyond the client's timeout
                    if ctx.startswith("drop") and n == 1:
                        self.close_connection = True
                        return  # connection closed without a response
                    if ctx.startswith("garbage") and n == 1:
                        return self.reply(200, b"<html>proxy error</html>")
                    text = f"<QUE> about {ctx}? <ANS> {ctx} </END>"
                    self.reply(
                        200,
                        {
                            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                            "usage": {
                                "prompt_tokens": len(req["prompt"].split()),
                                "completion_tokens": len(text.split()),
                            },
                        },
                    )
                finally:
                    with outer.lock:
                        outer.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # the client hung up on a slow answer: expected here
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def engine(urls, **kw):
    settings = dict(
        base_url=urls, max_retries=3, request_timeout=0.5, backoff=0.05, max_concurrency=4, max_new_tokens=50
    )
    settings.update(kw)
    return build_engine("openai", **settings)


def test_retries_timeouts_and_failures(server):
    eng = engine(server.url)
    assert eng.model == "m"  # found through /v1/models
    names = ["ok0", "500x2", "slow", "drop", "garbage", "always500", "bad400", "ok1"]
    out = eng.generate([cook_context(n) for n in names])
    eng.close()
    good = [n for n in names if n not in ("always500", "bad400")]
    for n, o in zip(names, out):
        assert (o is None) == (n not in good), (n, o)
        if o:
            assert parse_pred(o) == [{"Q": f"about {n}?", "A": n}]  # each answer lands on its own prompt
    a = {n: len(server.attempts[n]) for n in names}
    assert a == {"ok0": 1, "500x2": 3, "slow": 2, "drop": 2, "garbage": 2, "always500": 4, "bad400": 1, "ok1": 1}
    t = server.attempts["500x2"]
    assert t[1] - t[0] >= 0.05 and t[2] - t[1] >= 0.1  # exponential backoff: 0.05 s, then 0.1 s (+jitter)
    t = server.attempts["slow"]
    assert 0.45 <= t[1] - t[0] < 1.4  # retried after the 0.5 s timeout, not after the 1.5 s answer
    u = eng.usage
    assert (
        u.prompts == 8
        and u.failures == 2
        and u.generated_tokens == sum(len(f"<QUE> about {n}? <ANS> {n} </END>".split()) for n in good)
    )


def test_bounded_concurrency():
    s = FaultServer(hold=0.15)
    try:
        eng = engine(s.url, max_concurrency=3)
        out = eng.generate([cook_context(f"ok{i}") for i in range(12)])
        eng.close()
    finally:
        s.close()
    assert all(out) and s.requests == 12
    assert s.max_inflight == 3  # never more than the bound, and the bound is used
    assert eng.usage.seconds >= 4 * 0.15  # 12 requests, 3 at a time


def test_round_robin_over_replicas():
    a, b = FaultServer(), FaultServer()
    try:
        eng = engine([f"{a.url},{b.url}"], max_concurrency=2)
        out = eng.generate([cook_context(f"ok{i}") for i in range(10)])
        eng.close()
    finally:
        a.close()
        b.close()
    assert all(out) and a.requests == b.requests == 5


def test_a_dead_replica_is_routed_around(server):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # bound, not listening: connection refused
    try:
        eng = engine([dead, server.url], model="m")
        out = eng.generate([cook_context(f"ok{i}") for i in range(6)])
        eng.close()
    finally:
        s.close()
    assert all(out) and server.requests == 6


def test_cli_run_goes_on_through_failures(server, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    names = ["ok0", "always500", "ok1", "bad400"]
    path.write_text("".join(json.dumps({"id": i, "text": n}) + "\n" for i, n in enumerate(names)))
    assert (
        main(
            [
                "--input",
                str(path),
                "--output-dir",
                str(tmp_path / "o"),
                "--engine",
                "openai",
                "--openai-base-url",
                server.url,
                "--max-retries",
                "1",
                "--request-timeout",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "failures       2 generations" in out and "texts          4 synthesized" in out
    entries = [e for line in open(tmp_path / "o" / "shard00000-part00000.jsonl") for e in json.loads(line)]
    assert {e["context"]: len(e["QA_list"]) for e in entries} == {"ok0": 1, "always500": 0, "ok1": 1, "bad400": 0}


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(RuntimeError, match="could not list the served models"):
        engine("http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ValueError, match="http://HOST:PORT/v1"):
        engine("localhost:8000")
