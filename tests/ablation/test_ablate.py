"""tools/ablate.py end to end, as a user runs it: a minimal ablation (2 arms x 2 seeds x 20 steps, rules engine)
through every real tool, then the same plan killed with -9 in the middle and rerun."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, write_jsonl
from tests.launch import environment, run

pytestmark = pytest.mark.slow  # ~2-4 minutes each on 2 cores: every stage starts its tool (torchrun for 8 of them)

ITERS, BATCH, SEQ = 10, 8, 128  # 10,240 tokens per run: the IPT arm holds a few augmented documents


def make_plan(tmp_path, real_texts, mistral_model) -> str:
    texts = real_texts[:240]
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for i, t in enumerate(texts) if i % 4])
    held = write_jsonl(tmp_path / "held.jsonl", [{"text": t} for i, t in enumerate(texts) if i % 4 == 0])
    plan = {
        "corpus": train,
        "held_out": held,
        "tokenizer": {"type": "SentencePieceTokenizer", "model": mistral_model},
        "synthesizer": {"engine": "rules", "rounds": 2},
        "arms": ["vanilla", "ipt"],
        "token_budget": ITERS * BATCH * SEQ,
        "max_epochs": 10,
        "model": {"preset": "tiny", "args": ["--max-position-embeddings", str(SEQ)]},
        "seq_length": SEQ,
        "micro_batch_size": BATCH // 2,
        "global_batch_size": BATCH,
        "seeds": [1, 2],
        "layout": {"nproc_per_node": 1},
        "split": "90,10,0",
        "pretrain_args": ["--lr", "3e-3", "--log-interval", "1", "--eval-interval", "4", "--eval-iters", "1"],
        "build_tasks_args": ["--max-sentence-words", "25", "--max-passage-words", "60", "--max-items", "10"],
        "evaluate_args": ["--max-new-tokens", "4"],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def comparable(report: dict) -> dict:
    """The report without what may differ between two runs of one plan: wall times (of the stages, and the
    synthesis engine's seconds in the cost)."""
    out = {k: v for k, v in report.items() if k != "stage_seconds"}
    for cost in out["synthesis_cost"].values():
        cost.pop("engine_seconds")
        cost["per_billion_raw_tokens"].pop("engine_seconds")
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, real_texts, mistral_model):
    tmp_path = tmp_path_factory.mktemp("ablation")
    plan = make_plan(tmp_path, real_texts, mistral_model)
    out = run("tools/ablate.py", "--plan", plan, "--run-dir", tmp_path / "run", timeout=1200)
    return plan, str(tmp_path / "run"), out


def test_minimal_ablation_end_to_end(uninterrupted):
    plan, run_dir, out = uninterrupted
    assert "report: " in out and "ETA" in out
    report = read_json(os.path.join(run_dir, "report", "report.json"))
    # equal tokens: every run saw exactly ITERS global batches (the runs' own log lines, via the stage markers)
    tokens = report["tokens"]
    assert tokens["equal"] and tokens["spread"] == 0
    assert {v for arm in tokens["runs"].values() for v in arm.values()} == {ITERS * BATCH * SEQ}
    # every number of the report equals the per-run evaluation files
    tasks = report["tasks"]
    assert set(tasks) == {"rc_sentence_choice", "rc_next_sentence_choice", "rc_sentence_completion", "held_out_text"}
    checked = 0
    for arm in ("vanilla", "ipt"):
        for seed in (1, 2):
            own = read_json(os.path.join(run_dir, "eval", arm, f"seed{seed}", "report.json"))
            for task, result in own["tasks"].items():
                for metric, value in result["metrics"].items():
                    if metric in tasks[task]["metrics"]:
                        assert tasks[task]["metrics"][metric]["arms"][arm]["per_seed"][str(seed)] == value
                        checked += 1
    assert checked >= 4 * (3 + 3 + 3 + 2)
    for task in tasks.values():
        for metric in task["metrics"].values():
            for entry in metric["arms"].values():
                assert entry["mean"] == pytest.approx(sum(entry["per_seed"].values()) / 2)
    # the deciding metrics carry verdicts with intervals
    verdicts = {(v["task"], v["metric"]) for v in report["verdicts"]}
    assert ("rc_sentence_choice", "gold_margin") in verdicts and ("held_out_text", "nll_per_token") in verdicts
    for v in report["verdicts"]:
        assert v["low"] <= v["mean"] <= v["high"] or v["low"] == v["high"]
    # the report's files, and one TensorBoard run per arm x seed with training and evaluation scalars
    for name in ("report.md", "figures/metrics.png", "figures/validation_loss.png"):
        assert os.path.getsize(os.path.join(run_dir, "report", name)) > 0
    assert sorted(os.listdir(os.path.join(run_dir, "tensorboard"))) == [
        "ipt-seed1",
        "ipt-seed2",
        "vanilla-seed1",
        "vanilla-seed2",
    ]
    # the synthesis cost is reported for the IPT arm
    assert report["synthesis_cost"]["ipt"]["engine"] == "rules"
    # a rerun redoes nothing
    again = run("tools/ablate.py", "--plan", plan, "--run-dir", run_dir, timeout=300)
    assert again.count("done earlier") == out.count(": done in ") and ": running" not in again


def _stage_markers(run_dir):
    folder = os.path.join(run_dir, "stages")
    return {name: read_json(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def test_kill_9_mid_run_then_rerun_redoes_nothing_finished_and_reports_the_same(uninterrupted, tmp_path):
    plan, clean_dir, _ = uninterrupted
    run_dir = str(tmp_path / "run")
    # the same plan in another directory, killed with -9 (the whole process group, as a scheduler would) while the
    # second training run is in the middle of its steps
    process = subprocess.Popen(
        [sys.executable, "tools/ablate.py", "--plan", plan, "--run-dir", run_dir],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = os.path.join(run_dir, "logs", "train-vanilla-seed2.log")
    deadline = time.time() + 600
    while time.time() < deadline:
        if os.path.exists(log) and re.search(r"iteration +5/", open(log, encoding="utf-8", errors="replace").read()):
            break
        assert process.poll() is None, "the ablation ended before it could be killed"
        time.sleep(0.2)
    else:
        pytest.fail("the second training run did not reach iteration 5")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = _stage_markers(run_dir)
    assert "train-vanilla-seed1.json" in before and "train-vanilla-seed2.json" not in before
    logs_before = {n: open(os.path.join(run_dir, "logs", n.replace(".json", ".log"))).read() for n in before}
    out = run("tools/ablate.py", "--plan", plan, "--run-dir", run_dir, timeout=1200)
    after = _stage_markers(run_dir)
    # nothing finished was redone: its marker and its log are as they were; the killed stage was run again
    for name, marker in before.items():
        assert after[name] == marker, name
        assert open(os.path.join(run_dir, "logs", name.replace(".json", ".log"))).read() == logs_before[name], name
    assert out.count("done earlier") == len(before)
    assert open(log).read().count("===== train/vanilla/seed2: attempt") == 2
    # and the report is the uninterrupted run's
    clean = read_json(os.path.join(clean_dir, "report", "report.json"))
    resumed = read_json(os.path.join(run_dir, "report", "report.json"))
    assert comparable(resumed) == comparable(clean)


def test_continual_pretraining_ablation_from_a_hugging_face_model(tmp_path, real_texts):
    """model: {hf_dir}: the HF model converted once, every run starts from it (no optimizer or RNG state), and packs,
    trains and evaluates with the model's own tokenizer. One seed: intervals over items only, and the report says so."""
    from tests.evaluation.tiny_llama import make_tiny_llama

    hf = make_tiny_llama(str(tmp_path / "tiny-llama"))
    texts = real_texts[:160]
    plan = {
        "corpus": write_jsonl(tmp_path / "train.jsonl", [{"text": t} for i, t in enumerate(texts) if i % 4]),
        "held_out": write_jsonl(tmp_path / "held.jsonl", [{"text": t} for i, t in enumerate(texts) if i % 4 == 0]),
        "arms": ["vanilla", "ipt"],
        "token_budget": 6 * 8 * 128,
        "max_epochs": 10,
        "model": {"hf_dir": hf},
        "seq_length": 128,
        "micro_batch_size": 4,
        "global_batch_size": 8,
        "seeds": [7],
        "split": "90,10,0",
        "pretrain_args": ["--lr", "1e-4", "--log-interval", "1"],
        "build_tasks_args": ["--max-sentence-words", "25", "--max-passage-words", "60", "--max-items", "8"],
        "evaluate_args": ["--max-new-tokens", "4"],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    out = run("tools/ablate.py", "--plan", path, "--run-dir", tmp_path / "run", timeout=1200)
    run_dir = tmp_path / "run"
    assert "[2/" in out and "convert" in out
    assert os.path.exists(run_dir / "base" / "model.json")
    for arm in ("vanilla", "ipt"):
        train_log = (run_dir / "logs" / f"train-{arm}-seed7.log").read_text()
        assert f"--load {run_dir / 'base'} --no-load-optim --no-load-rng" in train_log
        assert "--tokenizer-type HuggingFaceTokenizer" in train_log
    report = read_json(run_dir / "report" / "report.json")
    assert report["bootstrap"]["resampled"] == "items only (one seed)"
    assert report["tokens"]["equal"] and report["tokens"]["runs"]["ipt"]["7"] == 6 * 8 * 128
    # both arms were scored on all the held-out documents
    assert report["tasks"]["held_out_text"]["items"] == 40
