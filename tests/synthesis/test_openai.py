"""The openai engine's error handling against a real local HTTP server that injects faults.

The server speaks the OpenAI completions protocol on 127.0.0.1 and misbehaves on purpose (HTTP 500s, answers
later than the client's timeout, a body sent a byte a second forever, dropped connections, non-JSON bodies, HTTP
400, empty answers), keyed by words in the prompt. The happy path against a real model server (`vllm serve`) is in test_vllm.py.
"""

import json
import os
import random
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from megatron_ipt.formats.wire import cook_context, parse_pred
from megatron_ipt.synthesis.engines import build_engine
from tools.synthesize import main


class FaultServer:
    """``failing``: contexts answered with HTTP 500 (an outage of the moment, changed by a test between runs).
    ``count_demos``: each answer says how many demonstrations its prompt had, so a text whose demonstration
    changed gets another answer, as from a real model."""

    def __init__(self, name="m", hold=0.0, count_demos=False, jitter=0.0):
        self.attempts = defaultdict(list)  # context -> [monotonic time of each attempt]
        self.spans = []  # (demonstrations in the prompt, start, end) of each answered request
        self.jitter, self.rng = jitter, random.Random(0)
        self.inflight = self.max_inflight = self.requests = 0
        self.lock = threading.Lock()
        self.hold = hold
        self.failing, self.count_demos, self.auth = set(), count_demos, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            counted_in = False  # a completion request counted in outer.inflight and not yet out

            def log_message(self, *args):
                pass

            def count_out(self):
                """Counts this request out, before its answer is written: once the client has the answer it may send
                the next request, which must not find this one still counted in flight."""
                if self.counted_in:
                    self.counted_in = False
                    with outer.lock:
                        outer.inflight -= 1
                        outer.spans.append((self.demos, self.start, time.monotonic()))

            def reply(self, code, payload):
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.count_out()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                assert self.path == "/v1/models"
                outer.auth.append(self.headers.get("Authorization"))
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
                    self.counted_in, self.demos = True, req["prompt"].count("<CON>") - 1
                with outer.lock:
                    delay = outer.hold + outer.rng.uniform(0, outer.jitter)
                self.start = time.monotonic()
                try:
                    time.sleep(delay)
                    if req["model"] != name or req.get("add_special_tokens") is not False:
                        return self.reply(400, {"error": "bad request body"})
                    if ctx.startswith("always500") or (ctx.startswith("500x2") and n <= 2) or ctx in outer.failing:
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
                    if outer.count_demos:
                        text = f"<QUE> about {ctx}? <ANS> {ctx}, {req['prompt'].count('<CON>') - 1} demos </END>"
                    if ctx.startswith("drip"):  # headers, then one byte a second, forever (until the client hangs up)
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", "1000000")
                        self.end_headers()
                        while True:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(1)
                    if ctx.startswith("empty"):  # a server that answers nothing: a failed generation
                        text = ""
                    if ctx.startswith("nopairs"):  # an answer, but no pair in it: a text without pairs
                        text = "I cannot write questions about this text."
                    malformed = {
                        "usagelist": {"choices": [{"text": text}], "usage": [1, 2]},
                        "usagestr": {"choices": [{"text": text}], "usage": {"prompt_tokens": "many"}},
                        "textnum": {"choices": [{"text": 5}]},
                        "textnull": {"choices": [{"text": None}]},
                        "nochoices": {"id": "x"},
                        "emptychoices": {"choices": []},
                        "choicestr": {"choices": "text"},
                        "alist": [text],
                    }
                    for kind, answer in malformed.items():  # "<kind>once": malformed at the first attempt only
                        if ctx == kind or (ctx == kind + "once" and n == 1):
                            return self.reply(200, answer)
                    usage = {"prompt_tokens": len(req["prompt"].split()), "completion_tokens": len(text.split())}
                    if ctx.startswith("cached"):  # as vllm serve --enable-prompt-tokens-details; "cachedbad": garbled
                        usage["prompt_tokens_details"] = {"cached_tokens": "x" if ctx == "cachedbad" else 3}
                    self.reply(200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}], "usage": usage})
                finally:
                    self.count_out()

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


def closing_replica():
    """A replica that accepts connections and closes them unanswered (a server that died mid-way), counting them."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1", accepted, listener


def test_each_retry_goes_to_the_next_replica(server, monkeypatch):
    """With no cool-down, a request whose first attempt drew the dead replica retries on the live one, whatever
    the other requests in flight drew meanwhile (with one round-robin cursor shared by all attempts, 6 concurrent
    requests with one retry each lost two of them here, every time)."""
    import megatron_ipt.synthesis.engines.openai as openai_engine

    monkeypatch.setattr(openai_engine, "REPLICA_COOLDOWN", 0.0)
    dead, accepted, listener = closing_replica()
    try:
        eng = engine([dead, server.url], model="m", max_retries=1, max_concurrency=6)
        out = eng.generate([cook_context(f"ok{i}") for i in range(6)])
        eng.close()
    finally:
        listener.close()
    assert all(out) and server.requests == 6
    assert len(accepted) >= 3  # the dead replica did get first attempts: the retries are what saved them


def test_an_unreachable_replica_is_passed_over(server, caplog):
    """After one failed connection the replica is left alone for the cool-down: one lost attempt and one warning,
    not one per request."""
    dead, accepted, listener = closing_replica()
    try:
        with caplog.at_level("INFO", logger="megatron_ipt.synthesis"):
            eng = engine([dead, server.url], model="m", max_concurrency=1)
            out = eng.generate([cook_context(f"ok{i}") for i in range(6)])
            eng.close()
    finally:
        listener.close()
    assert all(out) and server.requests == 6
    assert len(accepted) == 1  # the start-up's /models drew it first; nothing after
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert warnings == [f"openai: {dead} unreachable; passed over for 30 s"]


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
    flags = ["--engine", "openai", "--openai-base-url", server.url, "--max-retries", "1", "--request-timeout", "2"]
    assert main(["--input", str(path), "--output-dir", str(tmp_path / "o"), "--max-failure-rate", "0.5", *flags]) == 0
    out = capsys.readouterr().out
    assert "failures       2 generations" in out and "texts          4 synthesized" in out
    entries = [e for line in open(tmp_path / "o" / "shard00000-part00000.jsonl") for e in json.loads(line)]
    assert {e["context"]: len(e["QA_list"]) for e in entries} == {"ok0": 1, "always500": 0, "ok1": 1, "bad400": 0}


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot reach a server at http://127.0.0.1:9/v1"):
        engine("http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ValueError, match="http://HOST:PORT/v1"):
        engine("localhost:8000")


def test_malformed_answers_fail_their_item_only(server):
    """A server answering JSON of the wrong shape costs that item (after the retries), never the run."""
    eng = engine(server.url, max_retries=2)
    bad = ["usagelist", "usagestr", "textnum", "textnull", "nochoices", "emptychoices", "choicestr", "alist"]
    names = ["ok0", *bad, "textnumonce", "alistonce", "ok1"]
    out = eng.generate([cook_context(n) for n in names])
    eng.close()
    assert {n: o is None for n, o in zip(names, out)} == {n: n in bad for n in names}
    assert all(len(server.attempts[n]) == 3 for n in bad)  # retried as the engine's retry policy says
    assert len(server.attempts["textnumonce"]) == len(server.attempts["alistonce"]) == 2
    assert parse_pred(out[names.index("textnumonce")]) == [{"Q": "about textnumonce?", "A": "textnumonce"}]
    assert eng.usage.failures == len(bad) and eng.usage.prompts == len(names)


def write_texts(path, names):
    path.write_text("".join(json.dumps({"id": n, "text": n}) + "\n" for n in names))


def synthesize(server, path, out, *more):
    flags = ["--engine", "openai", "--openai-base-url", server.url, "--max-retries", "0", "--request-timeout", "5"]
    return main(["--input", str(path), "--output-dir", str(out), "--rounds", "2", "--part-size", "8", *flags, *more])


def outputs(out):
    return {f: open(out / f).read() for f in sorted(os.listdir(out)) if f.endswith(".jsonl")}


def test_resume_retries_failed_texts_as_an_uninterrupted_run(tmp_path, capsys):
    """Failed texts are recorded per part; --resume regenerates them, and the texts of the next round whose
    demonstrations they are, and merges them in place: the files equal those of a run without failures."""
    s = FaultServer(count_demos=True)
    try:
        path = tmp_path / "in.jsonl"
        write_texts(path, [f"t{i:02d}" for i in range(24)])  # 3 parts of 8, 2 rounds: t00-t03 then t04-t07 ...
        assert synthesize(s, path, tmp_path / "clean") == 0
        s.failing = {"t01", "t09", "t14"}  # round 0 of parts 0 and 1 (t05, t13 lose a demonstration), round 1
        assert synthesize(s, path, tmp_path / "o", "--max-failure-rate", "0.2") == 0
        out = capsys.readouterr().out
        assert "failures       3 generations of 24 in this run" in out and "3 failed texts in the files" in out
        manifest = json.load(open(tmp_path / "o" / "manifest-shard00000.json"))
        assert [p["failed"] for p in manifest["parts"]] == [[1], [1, 6], []]
        assert outputs(tmp_path / "o") != outputs(tmp_path / "clean")
        s.failing, before = set(), s.requests
        assert synthesize(s, path, tmp_path / "o", "--resume") == 0
        out = capsys.readouterr().out
        assert s.requests - before == 5  # t01, t09, t14 and the texts they are demonstrations for: t05, t13
        assert "texts          5 synthesized (3 of them failed before and were retried), 19 skipped" in out
        assert "0 failed texts in the files" in out
        assert outputs(tmp_path / "o") == outputs(tmp_path / "clean")
        manifest = json.load(open(tmp_path / "o" / "manifest-shard00000.json"))
        assert [p["failed"] for p in manifest["parts"]] == [[], [], []] and manifest["complete"]
        before = s.requests
        assert synthesize(s, path, tmp_path / "o", "--resume") == 0  # nothing left to do
        assert s.requests == before and outputs(tmp_path / "o") == outputs(tmp_path / "clean")
    finally:
        s.close()


def test_failure_rate_stops_the_run_and_resume_finishes_it(tmp_path, capsys):
    s = FaultServer(count_demos=True)
    try:
        path = tmp_path / "in.jsonl"
        names = [f"t{i:02d}" for i in range(24)]
        write_texts(path, names)
        assert synthesize(s, path, tmp_path / "clean") == 0
        s.failing = set(names)  # an outage
        assert synthesize(s, path, tmp_path / "o") == 3  # default --max-failure-rate 0.05
        captured = capsys.readouterr()
        assert "failures       8 generations of 8 in this run" in captured.out
        assert "error: 8 of 8 generations failed (100.0%), more than --max-failure-rate 0.05" in captured.err
        assert "1 of 3 parts written" in captured.err and "--resume" in captured.err
        assert list(outputs(tmp_path / "o")) == ["shard00000-part00000.jsonl"]  # stopped after the first part
        s.failing = set()
        assert synthesize(s, path, tmp_path / "o", "--resume") == 0
        assert outputs(tmp_path / "o") == outputs(tmp_path / "clean")
    finally:
        s.close()


def test_unreachable_server_stops_before_anything_is_written(server, tmp_path, capsys):
    import socket

    path = tmp_path / "in.jsonl"
    write_texts(path, ["t0", "t1"])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        flags = ["--engine", "openai", "--model", "m", "--max-retries", "1", "--input", str(path)]
        assert main([*flags, "--openai-base-url", dead, "--output-dir", str(tmp_path / "o")]) == 1
    finally:
        sock.close()
    err = capsys.readouterr().err
    assert f"error: --engine openai: cannot reach a server at {dead}" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o")  # nothing written: not even the output directory
    flags[3] = "other"  # a model the server does not serve
    assert main([*flags, "--openai-base-url", server.url, "--output-dir", str(tmp_path / "o")]) == 1
    assert "--model 'other' is not served at" in capsys.readouterr().err and not os.path.exists(tmp_path / "o")


def test_api_key_from_the_flag_or_the_environment(server, tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    write_texts(path, ["t0"])
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert synthesize(server, path, tmp_path / "a") == 0
    assert synthesize(server, path, tmp_path / "b", "--api-key", "from-flag") == 0
    assert server.auth == ["Bearer from-env", "Bearer from-flag"]


def test_pipelined_collections_equal_the_barrier_schedule_byte_for_byte(tmp_path, capsys):
    """Random per-request delays make generations come back in any order; with greedy decoding (each answer a
    function of its prompt) the pipelined schedule writes the barrier schedule's files, byte for byte."""
    s = FaultServer(count_demos=True, jitter=0.03)
    try:
        path = tmp_path / "in.jsonl"
        write_texts(path, [f"t{i:02d}" for i in range(30)])
        flags = ["--rounds", "3", "--part-size", "15", "--max-concurrency", "4"]
        assert synthesize(s, path, tmp_path / "barrier", *flags, "--schedule", "barrier") == 0
        barrier_spans, s.spans, s.max_inflight = s.spans, [], 0
        assert synthesize(s, path, tmp_path / "pipelined", *flags, "--schedule", "pipelined") == 0
        assert outputs(tmp_path / "pipelined") == outputs(tmp_path / "barrier")
        parts = [json.load(open(tmp_path / d / "manifest-shard00000.json"))["parts"] for d in ("barrier", "pipelined")]
        assert parts[0] == parts[1]
        assert s.max_inflight == 4  # the bound holds, and is used
        capsys.readouterr()
    finally:
        s.close()

    def overlapped(spans):  # a request with a demonstration began before the last one without had ended
        return min(t for d, t, _ in spans if d > 0) < max(e for d, _, e in spans if d == 0)

    # 5 chains a part: the barrier waits for each round; the pipelined run does not (the test is not vacuous)
    assert not overlapped([x for x in barrier_spans[:15]]) and overlapped(s.spans[:15])


@pytest.mark.parametrize("when", ["before", "after"])
def test_kill_9_during_a_pipelined_run_then_resume_equals_barrier(tmp_path, when):
    """kill -9 at part 1's rename while the pipelined schedule has requests in flight: --resume (pipelined)
    loses and duplicates nothing, and the files equal an uninterrupted barrier run's."""
    from tests.synthesis.test_runner import KILLER, run_cli

    s = FaultServer(count_demos=True, jitter=0.02)
    try:
        path = tmp_path / "in.jsonl"
        write_texts(path, [f"t{i:02d}" for i in range(36)])
        flags = ["--input", str(path), "--rounds", "2", "--part-size", "12", "--engine", "openai"]
        flags += ["--openai-base-url", s.url, "--max-concurrency", "3"]
        assert main([*flags, "--output-dir", str(tmp_path / "clean"), "--schedule", "barrier"]) == 0
        out = str(tmp_path / "o")
        killed = run_cli(
            ["-c", KILLER, "shard00000-part00001.jsonl", "1", *flags, "--output-dir", out], {"KILL_WHEN": when}
        )
        assert killed.returncode == -9, killed.stderr
        resumed = run_cli(["tools/synthesize.py", *flags, "--output-dir", out, "--resume"])
        assert resumed.returncode == 0, resumed.stderr
        assert "files          3 of 3 parts written, 36 texts" in resumed.stdout
        assert outputs(tmp_path / "o") == outputs(tmp_path / "clean")
    finally:
        s.close()


def test_prefix_cache_hits_reported_by_the_server_are_counted(server):
    """``usage.prompt_tokens_details.cached_tokens`` (vllm serve --enable-prompt-tokens-details) is summed; a server
    that does not send it, or sends garbage there, leaves the item whole and the count unreported."""
    eng = engine(server.url)
    try:
        out = eng.generate([cook_context(c) for c in ("cached0", "plain", "cached1", "cachedbad")])
    finally:
        eng.close()
    assert all(out) and eng.usage.failures == 0
    assert (eng.usage.cached_prompt_tokens, eng.usage.cache_reports) == (6, 2)


def test_an_empty_answer_fails_an_answer_without_pairs_does_not(server, tmp_path, capsys):
    """Issue 25: "failed generation" is kept for an engine that did not answer (here: an empty completion, after
    the retries of nothing); an answer that parses to zero pairs is a text without pairs, never a failure."""
    path = tmp_path / "in.jsonl"
    write_texts(path, ["ok0", "empty0", "nopairs0", "ok1"])
    summary_json = tmp_path / "summary.json"
    flags = ["--max-failure-rate", "0.3", "--summary-json", str(summary_json), "--rounds", "1"]
    assert synthesize(server, path, tmp_path / "o", *flags) == 0
    s = json.load(open(summary_json))
    assert (s["failures"], s["texts_without_pairs"], s["usage"]["failures"]) == (1, 1, 1)
    assert (s["written"]["failures"], s["written"]["texts_without_pairs"]) == (1, 1)
    manifest = json.load(open(tmp_path / "o" / "manifest-shard00000.json"))
    assert [p["failed"] for p in manifest["parts"]] == [[1]]  # empty0: --resume retries it, not nopairs0
    out = capsys.readouterr().out
    assert "failures       1 generations of 4" in out and "without pairs  1 texts of 4 in this run" in out


def test_a_server_dripping_bytes_ends_as_a_failed_generation(server, tmp_path):
    """Issue 25: --request-timeout is an overall deadline, not a per-read one. A server that sends its headers and
    then one byte a second forever is cut off after the deadline (and the retry's), the text is a recorded
    failure, and the run ends with the exit status --max-failure-rate gives, in bounded time."""
    import subprocess
    import sys

    path = tmp_path / "in.jsonl"
    write_texts(path, ["ok0", "drip0", "ok1", "ok2"])
    out, summary_json = tmp_path / "o", tmp_path / "summary.json"
    flags = ["tools/synthesize.py", "--input", str(path), "--engine", "openai", "--openai-base-url", server.url]
    flags += ["--request-timeout", "3", "--max-retries", "1", "--summary-json", str(summary_json)]
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, *flags, "--output-dir", str(out), "--max-failure-rate", "0.5"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("synthesize.py still waiting on a dripping server after 60 s (--request-timeout 3)")
    assert time.monotonic() - start < 20, done.stderr  # 2 attempts of 3 s + backoff + start-up
    assert done.returncode == 0, done.stderr
    assert "no complete answer within 3 s (--request-timeout)" in done.stderr
    assert len(server.attempts["drip0"]) == 2
    s = json.load(open(summary_json))
    assert s["failures"] == 1 and s["usage"]["failures"] == 1
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert [p["failed"] for p in manifest["parts"]] == [[1]]  # recorded: --resume retries it
    # at the default --max-failure-rate (5 %) the same failure stops the run with exit status 3
    done = subprocess.run(
        [sys.executable, *flags, "--output-dir", str(tmp_path / "o3")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 3 and "1 of 4 generations failed" in done.stderr, done.stderr
