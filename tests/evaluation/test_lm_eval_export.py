"""tools/evaluate.py export-lm-eval: lm-evaluation-harness task YAML + JSONL from our task files.

The format checks always run. The test that loads the export with lm-eval's own TaskManager runs only where
`lm_eval` imports (it is not a dependency, and CI does not install it)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from megatron_ipt import assets
from megatron_ipt.evaluation import metrics, tasks
from megatron_ipt.evaluation.lm_eval_export import MANIFEST, TAG
from tests.conftest import write_jsonl
from tests.evaluation.test_tasks import _cli

TASK_NAMES = ["rc_next_sentence_choice", "rc_sentence_choice", "rc_sentence_completion"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tasks built by `build-tasks` from real held-out text, plus an AdaptLLM-format file, exported."""
    root = tmp_path_factory.mktemp("export")
    held_out = write_jsonl(root / "held_out.jsonl", [{"text": t} for t in assets.opticks_paragraphs()[-40:]])
    cli = _cli()
    assert cli.main(["build-tasks", "--input", held_out, "--output-dir", str(root / "tasks"), "--max-items", "12"]) == 0
    write_jsonl(
        root / "tasks" / "ConvFinQA.jsonl",  # AdaptLLM's field names: input, label
        [
            {"input": "Revenue was 10 and costs 4. Profit?\nAnswer:", "label": ["6", "6.0"]},
            {"input": "2+2?", "label": "4"},
        ],
    )
    out = root / "lm_eval_tasks"
    assert cli.main(["export-lm-eval", "--tasks", str(root / "tasks"), "--output-dir", str(out)]) == 0
    return root / "tasks", out


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_export_writes_the_documented_yaml_and_every_item(exported):
    yaml = pytest.importorskip("yaml")
    task_dir, out = exported
    names = ["ConvFinQA"] + TASK_NAMES
    assert sorted(os.listdir(out)) == sorted([MANIFEST] + [f"{n}.{e}" for n in names for e in ("yaml", "jsonl")])
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["tasks"]) == sorted(names)
    for name in names:
        ours = tasks.load_task(str(task_dir / f"{name}.jsonl"))
        config = yaml.safe_load((out / f"{name}.yaml").read_text())
        data = str(out / f"{name}.jsonl")
        assert config["task"] == name and config["tag"] == [TAG]
        assert (config["dataset_path"], config["dataset_kwargs"], config["test_split"]) == (
            "json",
            {"data_files": {"test": data}},
            "test",
        )
        assert config["doc_to_text"] == "prompt"
        assert config["metadata"]["megatron_ipt_metrics"] == ours.metrics
        rows = _rows(data)
        assert [(r["id"], r["line"], r["prompt"]) for r in rows] == [(i.id, i.line, i.prompt) for i in ours.items]
        if ours.kind == tasks.CHOICE:
            assert config["output_type"] == "multiple_choice"
            assert (config["doc_to_choice"], config["doc_to_target"], config["target_delimiter"]) == (
                "options",
                "gold",
                " ",
            )
            assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
            assert [(r["options"], r["gold"]) for r in rows] == [(i.options, i.gold) for i in ours.items]
        else:
            assert config["output_type"] == "generate_until" and config["doc_to_target"] == "answers"
            assert config["generation_kwargs"] == {"until": ["\n"], "max_gen_toks": 100, "do_sample": False}
            assert [m["metric"] for m in config["metric_list"]] == ["exact_match"]
            assert [r["answers"] for r in rows] == [i.answers for i in ours.items]
    assert len(_rows(out / "rc_sentence_choice.jsonl")) == 12


def test_bad_input_names_the_file_and_writes_nothing(tmp_path, capsys):
    cli = _cli()
    bad = write_jsonl(
        tmp_path / "t.jsonl", [{"prompt": "p", "answers": ["a"]}, {"prompt": "p", "gold": 0, "options": ["x"]}]
    )
    out = tmp_path / "out"
    assert cli.main(["export-lm-eval", "--tasks", bad, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: {bad}:2: bad field: 'options' needs at least 2 entries" in err and "--skip-bad-lines" in err
    assert not out.exists()

    escaping = write_jsonl(tmp_path / "e.jsonl", [{"task": {"name": "../escaped"}}, {"prompt": "p", "answers": "a"}])
    assert cli.main(["export-lm-eval", "--tasks", escaping, "--output-dir", str(out)]) == 1
    assert f"error: {escaping}:1: bad header: task name '../escaped' starts with '.'" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "escaped.yaml").exists()
    spaced = write_jsonl(tmp_path / "s.jsonl", [{"task": {"name": "Fin QA"}}, {"prompt": "p", "answers": "a"}])
    assert cli.main(["export-lm-eval", "--tasks", spaced, "--output-dir", str(out)]) == 1  # lm-eval's stricter rule
    assert f"error: {spaced}: task name 'Fin QA' cannot name files in --output-dir" in capsys.readouterr().err

    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "p", "answers": "a"}])
    assert cli.main(["export-lm-eval", "--tasks", good, "--output-dir", str(other)]) == 1
    assert f"holds no {MANIFEST} (not an earlier export)" in capsys.readouterr().err
    assert os.listdir(other) == ["keep.txt"]


def test_a_rerun_replaces_an_earlier_export_as_a_whole(tmp_path):
    cli = _cli()
    first = write_jsonl(tmp_path / "first.jsonl", [{"prompt": "p", "answers": "a"}])
    second = write_jsonl(tmp_path / "second.jsonl", [{"prompt": "q", "answers": "b"}])
    out = tmp_path / "out"
    assert cli.main(["export-lm-eval", "--tasks", first, "--output-dir", str(out)]) == 0
    assert cli.main(["export-lm-eval", "--tasks", second, "--output-dir", str(out), "--max-new-tokens", "7"]) == 0
    assert sorted(os.listdir(out)) == [MANIFEST, "second.jsonl", "second.yaml"]
    assert "max_gen_toks: 7" in (out / "second.yaml").read_text()
    assert sorted(os.listdir(tmp_path)) == ["first.jsonl", "out", "second.jsonl"]  # no temporary directory left


def test_a_killed_exports_leftovers_go_with_the_next_export(tmp_path):
    """A kill -9 between writing and publishing leaves the export's temporary directory (named after its dead
    pid, as every atomic writer's is): the next export next to it removes it and keeps the earlier export whole
    until its own is complete."""
    cli = _cli()
    first = write_jsonl(tmp_path / "first.jsonl", [{"prompt": "p", "answers": "a"}])
    out = tmp_path / "out"
    assert cli.main(["export-lm-eval", "--tasks", first, "--output-dir", str(out)]) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid no live process has
    leftover = tmp_path / f"out.{dead.pid}@{socket.gethostname()}.tmp"
    leftover.mkdir()
    (leftover / "first.jsonl").write_text("half")
    assert cli.main(["export-lm-eval", "--tasks", first, "--output-dir", str(out)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["first.jsonl", "out"]
    assert sorted(os.listdir(out)) == sorted([MANIFEST, "first.jsonl", "first.yaml"])


def test_lm_eval_loads_the_export_and_builds_our_requests(exported, tmp_path, monkeypatch):
    """lm-eval's own loader over the output directory: its docs, requests (context, continuation) and targets
    are ours, and its exact_match scores predictions as our metric does."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))  # read before datasets is imported
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (optional; CI does not install it)")
    from lm_eval.tasks import TaskManager

    task_dir, out = exported
    loaded = TaskManager(include_path=str(out), include_defaults=False).load([TAG])["tasks"]
    assert sorted(loaded) == sorted(["ConvFinQA"] + TASK_NAMES)
    for name, task in loaded.items():
        ours = tasks.load_task(str(task_dir / f"{name}.jsonl"))
        docs = list(task.test_docs())
        assert [task.doc_to_text(d) for d in docs] == [i.prompt for i in ours.items]
        task.build_all_requests()
        by_doc = {}
        for instance in task.instances:
            by_doc.setdefault(instance.doc_id, []).append(instance.args)
        for doc_id, item in enumerate(ours.items):
            doc = docs[doc_id]
            if ours.kind == tasks.CHOICE:
                assert by_doc[doc_id] == [(item.prompt, " " + option) for option in item.options]
                assert task.doc_to_choice(doc) == item.options and task.doc_to_target(doc) == item.gold
                for pred in range(len(item.options)):  # the highest log-likelihood is lm-eval's prediction
                    lls = [(0.0 if k == pred else -5.0, k == pred) for k in range(len(item.options))]
                    assert task.process_results(doc, lls)["acc"] == float(pred == item.gold)
            else:
                assert by_doc[doc_id] == [(item.prompt, {"until": ["\n"], "max_gen_toks": 100, "do_sample": False})]
                answer = item.answers[-1]
                for pred in [answer, f" {answer.upper()}.", f"The  {answer}!", f"{answer} more", "", "a"]:
                    expected = metrics.exact_match([item.answers], [pred]) / 100
                    assert task.process_results(doc, [pred])["exact_match"] == expected, (name, pred)


@pytest.mark.slow  # ~50 s on the shared 2-core CPU; skipped (in no time) where lm-eval is not installed
def test_lm_eval_scores_a_real_model_as_our_runner_does(exported, tmp_path, monkeypatch):
    """SmolLM2-135M through lm-eval's own `hf` model on the export, and through tools/evaluate.py's scoring:
    the same log-likelihood for every option (ours: mean NLL x option tokens) and the same generations."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (optional; CI does not install it)")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from megatron_ipt.evaluation import scoring
    from megatron_ipt.evaluation.hf_backend import HFModel

    task_dir, out = exported
    names, limit = ["rc_sentence_choice", "rc_sentence_completion"], 2
    model_dir = assets.smollm2_hf_dir()
    results = simple_evaluate(
        model="hf",
        model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
        tasks=names,
        task_manager=TaskManager(include_path=str(out), include_defaults=False),
        limit=limit,
        batch_size=4,
        log_samples=True,
    )
    lm = HFModel(model_dir, batch_size=4, dtype="float32")
    ours = scoring.evaluate([tasks.load_task(str(task_dir / f"{n}.jsonl"), limit=limit) for n in names], lm, log=print)
    choice = tasks.load_task(str(task_dir / "rc_sentence_choice.jsonl"), limit=limit)
    samples = sorted(results["samples"]["rc_sentence_choice"], key=lambda s: s["doc_id"])
    for item, prediction, sample in zip(choice.items, ours["_predictions"]["rc_sentence_choice"], samples):
        prompt_tokens = len(lm.encode_batch([item.prompt])[0])
        for k, option in enumerate(item.options):
            tokens = len(lm.encode_batch([item.prompt + " " + option])[0]) - prompt_tokens
            assert sample["resps"][k][0][0] == pytest.approx(-prediction["option_nll"][k] * tokens, abs=1e-3)
    generated = sorted(results["samples"]["rc_sentence_completion"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0].strip() for s in generated] == [
        p["pred"] for p in ours["_predictions"]["rc_sentence_completion"]
    ]
    em = ours["tasks"]["rc_sentence_completion"]["metrics"]["exact_match"]
    assert results["results"]["rc_sentence_completion"]["exact_match,none"] == pytest.approx(em / 100)
