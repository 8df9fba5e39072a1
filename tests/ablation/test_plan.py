"""tools/ablate.py's plan: every bad plan is one line before any work starts, and a run directory keeps its plan."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from megatron_ipt.ablation.plan import PlanError, differing_keys, load_plan, resolved
from tests.conftest import REPO, write_jsonl
from tests.launch import environment, run


@pytest.fixture
def inputs(tmp_path, real_texts, mistral_model):
    """A small real corpus, held-out documents disjoint from it, and a plan that is valid as it is."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in real_texts[:60]])
    held = write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in real_texts[60:80]])
    plan = {
        "corpus": train,
        "held_out": held,
        "tokenizer": {"type": "SentencePieceTokenizer", "model": mistral_model},
        "arms": ["vanilla", "ipt"],
        "token_budget": 20000,
        "max_epochs": 2,
        "model": {"preset": "tiny"},
        "seq_length": 64,
        "micro_batch_size": 2,
        "global_batch_size": 4,
        "seeds": [1, 2],
    }
    return tmp_path, plan


def write_plan(tmp_path, plan, name="plan.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(plan) if name.endswith(".yaml") else json.dumps(plan))
    return str(path)


def ablate(*args, expect_rc=1):
    return run("tools/ablate.py", *args, expect_rc=expect_rc, timeout=120)


def test_valid_plan_resolves_with_defaults_and_derived_values(inputs):
    tmp_path, plan = inputs
    p = load_plan(write_plan(tmp_path, plan))
    assert p.train_iters == 20000 // (4 * 64) == 78
    assert p.synthesis_shards == 5 and p.seeds == [1, 2] and p.layout.nproc_per_node == 1
    data = resolved(p)
    assert data["derived"]["tokens_seen_per_run"] == 78 * 256
    assert set(data["input_sha256"]) == {"corpus", "held_out"}
    # JSON plans read the same
    assert load_plan(write_plan(tmp_path, plan, "plan.json")) == p


@pytest.mark.parametrize(
    "change, message",
    [
        ({"arms": ["vanilla", "ipt", "instruct"]}, "arms[2]: unknown arm 'instruct'"),
        ({"learning_rate": 1e-3}, "unknown key(s) learning_rate"),
        ({"layout": {"nproc": 2}}, "layout: unknown key(s) nproc"),
        ({"arms": ["vanilla", "mix", "ipt"]}, "a mix arm needs instruction_data"),
        ({"arms": ["vanilla", "mix"]}, "at least one ipt arm"),
        ({"synthesizer": {"engine": "hf"}}, "engine hf needs a model"),
        ({"synthesizer": {"engine": "hf", "args": ["--model", "./runs/no-such-synthesizer"]}}, "does not exist"),
        ({"pretrain_args": ["--train-iters", "5"]}, "pretrain_args: --train-iters is set by the ablation"),
        ({"token_budget": 100}, "less than one global batch"),
        ({"global_batch_size": 3}, "not a multiple of micro_batch_size"),
        ({"model": {"hf_dir": "/nonexistent"}}, "model.hf_dir: /nonexistent does not exist"),
    ],
)
def test_bad_plans_are_one_line(inputs, change, message):
    tmp_path, plan = inputs
    with pytest.raises(PlanError, match=None) as error:
        load_plan(write_plan(tmp_path, {**plan, **change}))
    assert message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_the_tool_refuses_before_any_work(inputs):
    """Through the tool: one `error:` line, exit 1, and nothing written in the run directory."""
    tmp_path, plan = inputs
    cases = {
        "unknown arm": ({"arms": ["vanilla", "ipt", "instruct"]}, "unknown arm 'instruct'"),
        # 60 documents of ~?k tokens cannot give 50M tokens in 2 passes: the arm and the most it gives are named
        "budget": ({"token_budget": 50_000_000}, "arm vanilla (the raw texts alone,"),
        "missing synthesizer": (
            {"synthesizer": {"engine": "hf", "args": ["--model", str(tmp_path / "tuned-hf")]}},
            f"the synthesizer model {tmp_path / 'tuned-hf'} does not exist",
        ),
    }
    for name, (change, message) in cases.items():
        out = ablate("--plan", write_plan(tmp_path, {**plan, **change}), "--run-dir", tmp_path / name)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], out
        assert not os.path.exists(tmp_path / name), name
    out = ablate("--plan", write_plan(tmp_path, {**plan, "token_budget": 50_000_000}), "--run-dir", tmp_path / "b")
    assert "gives at most" in out and "less than token_budget 50,000,000" in out


def test_held_out_documents_in_the_corpus_are_refused_with_a_count(inputs, real_texts):
    tmp_path, plan = inputs
    # 3 of the held-out documents are also training documents (one with other whitespace)
    held = [{"text": t} for t in real_texts[60:70]] + [{"text": real_texts[i]} for i in (3, 7)]
    held.append({"text": "  " + real_texts[11].replace(" ", "  ", 3)})
    plan["held_out"] = write_jsonl(tmp_path / "held2.jsonl", held)
    out = ablate("--plan", write_plan(tmp_path, plan), "--run-dir", tmp_path / "run")
    assert "held_out: 3 of 13 held-out documents are also in the training corpus" in out


def test_a_run_directory_refuses_another_plan_naming_the_keys(inputs):
    tmp_path, plan = inputs
    run_dir = tmp_path / "run"
    path = write_plan(tmp_path, plan)
    data = resolved(load_plan(path))
    os.makedirs(run_dir)
    (run_dir / "plan.json").write_text(json.dumps(data))
    out = ablate("--plan", path, "--run-dir", run_dir, "--set", "seeds=[1,2,3]", "--set", "token_budget=30000")
    assert (
        "was made with another plan; keys that differ: derived.tokens_seen_per_run, derived.train_iters, seeds, " in out
    )
    assert "token_budget" in out
    assert differing_keys(data, data) == []
    # a changed corpus under the same path is another plan too
    with open(plan["corpus"], "a") as f:
        f.write(json.dumps({"text": "One more training document."}) + "\n")
    out = ablate("--plan", path, "--run-dir", run_dir)
    assert "keys that differ: input_sha256.corpus" in out


def test_dry_run_prints_every_stage_and_runs_nothing(inputs):
    tmp_path, plan = inputs
    out = ablate("--plan", write_plan(tmp_path, plan), "--run-dir", tmp_path / "run", "--dry-run", expect_rc=0)
    for stage in (
        "# synthesize/rules-r2-",
        "# corpus/vanilla",
        "# pack/ipt",
        "# train/ipt/seed2",
        "# eval/vanilla/seed1",
    ):
        assert stage in out
    assert "--train-iters 78" in out and "--token-budget 20000" in out
    assert not os.path.exists(tmp_path / "run")


def dry_run(script, *argv) -> str:
    """A launch script as a user runs it, with this interpreter first on PATH (the scripts call `python`)."""
    env = environment(DRY_RUN="1", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    out = subprocess.run(
        ["bash", os.path.join(REPO, "examples", script), *map(str, argv)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_gpu_example_scripts_print_their_plan_and_commands(tmp_path, real_texts, mistral_model):
    """examples/ablation_*.sh with DRY_RUN=1: the plan resolves and every stage's command is printed, nothing runs."""
    corpus = write_jsonl(tmp_path / "raw.jsonl", [{"text": t} for t in real_texts[:20]])
    held = write_jsonl(tmp_path / "held.jsonl", [{"text": t} for t in real_texts[20:30]])
    tuning = write_jsonl(tmp_path / "tuning.jsonl", [{"context": "A text.", "QA_list": [{"Q": "Q?", "A": "A."}]}])
    general = write_jsonl(tmp_path / "orca.jsonl", [{"question": "Hi?", "response": "Hello."}])
    hf = tmp_path / "Meta-Llama-3-8B"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    general_run = dry_run("ablation_general_500m.sh", corpus, held, tuning, mistral_model, tmp_path / "g")
    assert "--model instructlm-500m" in general_run and "--train-iters 1907" in general_run
    assert "--nproc-per-node 8" in general_run and "--engine vllm" in general_run
    assert general_run.count("tools/pretrain.py") == 9 and general_run.count("tools/evaluate.py --load") == 9
    domain = dry_run("ablation_domain_continual.sh", corpus, held, general, hf, tmp_path / "d")
    assert "hf-to-megatron --hf-dir " + str(hf) in domain and "--recipe domain" in domain and "--rounds 3" in domain
    assert "--tokenizer-type HuggingFaceTokenizer" in domain and "--tensor-model-parallel-size 2" in domain
    assert not os.path.exists(tmp_path / "g") and not os.path.exists(tmp_path / "d")
