"""Task files (ours and AdaptLLM's), file:line errors, and task building from held-out real text."""

import importlib.util
import json
import os

import pytest

from megatron_ipt import assets
from megatron_ipt.evaluation import build_tasks, tasks
from megatron_ipt.io.inputs import InputError
from megatron_ipt.text import sentences
from tests.conftest import REPO, write_jsonl


def _cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", os.path.join(REPO, "tools", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_our_format_with_header(tmp_path):
    path = write_jsonl(
        tmp_path / "sentiment.jsonl",
        [
            {"task": {"metrics": ["weighted_f1"]}},
            {"id": "a", "prompt": "Great results.\nSentiment:", "options": ["negative", "positive"], "gold": 1},
            {"prompt": "Losses grew.\nSentiment:", "options": ["negative", "positive"], "gold": 0},
        ],
    )
    task = tasks.load_task(path)
    assert (task.name, task.kind, task.metrics) == ("sentiment", tasks.CHOICE, ["accuracy", "weighted_f1"])
    assert [(i.line, i.id, i.gold) for i in task.items] == [(2, "a", 1), (3, None, 0)]
    gen = tasks.load_task(write_jsonl(tmp_path / "qa.jsonl", [{"prompt": "Capital of France?", "answers": "Paris"}]))
    assert (gen.kind, gen.metrics, gen.items[0].answers) == (tasks.GENERATION, ["exact_match", "token_f1"], ["Paris"])


def test_adaptllm_format_and_task_metrics(tmp_path):
    """Field names of LMOps adaptllm (input / options / gold_index / class_id; label for generation)."""
    fpb = write_jsonl(
        tmp_path / "FPB.jsonl",
        [
            {
                "input": "Profit rose 5%.\nQuestion: what is the sentiment?\nAnswer:",
                "options": ["negative", "neutral", "positive"],
                "gold_index": 2,
            }
        ],
    )
    task = tasks.load_task(fpb)
    assert task.metrics == ["accuracy", "weighted_f1"] and task.items[0].prompt.startswith("Profit")
    conv = tasks.load_task(
        write_jsonl(tmp_path / "ConvFinQA.jsonl", [{"input": "What is 2+2? Answer:", "label": ["4"]}])
    )
    assert conv.kind == tasks.GENERATION and conv.metrics == ["exact_match", "token_f1", "numeric_em"]
    headline = write_jsonl(
        tmp_path / "Headline.jsonl",
        [
            {"input": "Gold up? Answer:", "options": ["No", "Yes"], "gold_index": 1, "class_id": 0},
            {"input": "Gold down? Answer:", "options": ["No", "Yes"], "gold_index": 0},
        ],
    )
    with pytest.raises(InputError, match=r"Headline.jsonl:2: grouped_weighted_f1 needs a 'class_id'"):
        tasks.load_task(headline)


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"prompt": "p", "options": ["a", "b"], "gold": 2', "malformed JSON"),
        ('["prompt"]', "not a JSON object"),
        ('{"options": ["a", "b"], "gold": 0}', "missing prompt"),
        ('{"prompt": "p", "options": ["a", "b"], "gold": 2}', "gold 2 is out of range for 2 options"),
        ('{"prompt": "p", "options": ["a", "b"], "gold": true}', "needs an integer 'gold'"),
        ('{"prompt": "p", "options": ["a", ""], "gold": 0}', "'options' has an empty string"),
        ('{"prompt": "p", "options": ["a"], "gold": 0}', "needs at least 2 entries"),
        ('{"prompt": "p"}', "needs 'options' \\+ 'gold'"),
        ('{"prompt": "p", "answers": "x"}', "a generation item in a multiple_choice task \\(line 1"),
        ('{"task": {"name": "late"}}', "header must be the first line"),
    ],
)
def test_bad_lines_name_file_line_and_problem(tmp_path, line, problem):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "ok", "options": ["a", "b"], "gold": 0}\n\n' + line + "\n")
    with pytest.raises(InputError, match=f"t.jsonl:3: .*{problem}"):
        tasks.load_task(str(path))
    task = tasks.load_task(str(path), skip_bad_lines=True)
    assert len(task.items) == 1 and sum(task.skipped.values()) == 1
    assert task.skipped_examples[0].startswith(f"{path}:3:")


def test_cli_reports_a_bad_task_line_before_loading_any_model(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"prompt": "p", "options": ["a", "b"], "gold": 0}\n{"prompt": "p", "options": ["a", "b"], "gold": 5}\n'
    )
    assert _cli().main(["--tasks", str(path), "--hf-model", str(tmp_path / "no-such-model")]) == 1
    assert f"error: {path}:2: bad gold: gold 5 is out of range for 2 options" in capsys.readouterr().err


def test_task_directory_and_duplicate_names(tmp_path):
    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "x.jsonl", [{"prompt": "p", "answers": ["q"]}])
    (tmp_path / "a" / "report.json").write_text("{}")  # not a task file
    assert [t.name for t in tasks.load_tasks([str(tmp_path / "a")])] == ["x"]
    write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "answers": ["q"]}])
    with pytest.raises(InputError, match="task name 'x' is also used by"):
        tasks.load_tasks([str(tmp_path / "a"), str(tmp_path / "x.jsonl")])


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    records = [{"text": t} for t in assets.pydoc_topics()[:30] + assets.opticks_paragraphs()[-30:]]
    return write_jsonl(tmp_path_factory.mktemp("held") / "held_out.jsonl", records)


def test_build_tasks_follows_its_rules_and_is_deterministic(held_out, tmp_path, capsys):
    cli = _cli()
    assert cli.main(["build-tasks", "--input", held_out, "--output-dir", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert "rc_sentence_choice" in capsys.readouterr().out
    cli.main(["build-tasks", "--input", held_out, "--output-dir", str(tmp_path / "b"), "--seed", "7"])
    cli.main(["build-tasks", "--input", held_out, "--output-dir", str(tmp_path / "c"), "--seed", "8"])
    for name in build_tasks.TASKS:
        a, b, c = ((tmp_path / d / f"{name}.jsonl").read_bytes() for d in "abc")
        assert a == b and a != c, name
    loaded = {t.name: t for t in tasks.load_tasks([str(tmp_path / "a")])}
    assert set(loaded) == set(build_tasks.TASKS)
    texts = [json.loads(line)["text"] for line in open(held_out)]
    doc_sentences = [set(sentences(t)) for t in texts]
    appears, nxt, complete = (loaded[n] for n in build_tasks.TASKS)
    assert len(appears.items) >= 20 and appears.header["seed"] == 7
    for item in appears.items:
        passage = item.prompt.split("\n\nQuestion:")[0]
        assert item.options[item.gold] in passage
        assert all(o not in passage for k, o in enumerate(item.options) if k != item.gold)
    assert len({i.gold for i in appears.items}) == 4  # the gold's position varies
    for item in nxt.items:
        doc = int(item.id[3:].split("-")[0])
        assert item.options[item.gold] in doc_sentences[doc] and item.options[item.gold] not in item.prompt
        assert all(o not in " ".join(texts[doc].split()) for k, o in enumerate(item.options) if k != item.gold)
    for item in complete.items:
        stem = item.prompt.rsplit("\nAnswer: ", 1)[1]
        assert f"{stem} {item.answers[0]}" in item.prompt.split("\n\nQuestion:")[0]


def test_build_tasks_reports_bad_input_lines(tmp_path):
    path = tmp_path / "held.jsonl"
    path.write_text('{"text": "One. Two."}\n{"txt": "x"}\n')
    with pytest.raises(InputError, match=r"held.jsonl:2: missing key: 'text'"):
        build_tasks.read_documents(str(path))


def test_build_tasks_deeply_nested_line_is_a_line_error(tmp_path, capsys):
    path = tmp_path / "held.jsonl"
    path.write_text('{"text": "One. Two."}\n' + "[" * 100_000 + "\n")
    assert _cli().main(["build-tasks", "--input", str(path), "--output-dir", str(tmp_path / "t")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {path}:2: too deeply nested")


def test_build_tasks_out_of_space_or_unwritable_is_one_line_and_leaves_the_old_files(
    held_out, tmp_path, capsys, monkeypatch
):
    import errno
    import stat

    from megatron_ipt.io import atomic

    cli, out = _cli(), tmp_path / "t"
    assert cli.main(["build-tasks", "--input", held_out, "--output-dir", str(out), "--seed", "7"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_fsync, calls = atomic.os.fsync, []

    def full_disk_on_the_second_file(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):  # a task file, not the directory
            calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", full_disk_on_the_second_file)
    capsys.readouterr()
    assert cli.main(["build-tasks", "--input", held_out, "--output-dir", str(out), "--seed", "8"]) == 1
    assert capsys.readouterr().err == f"error: {out / 'rc_next_sentence_choice.jsonl'}: no space left on device\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new file, no mix, no .tmp
    monkeypatch.undo()
    (tmp_path / "a-file").write_text("x")
    assert cli.main(["build-tasks", "--input", held_out, "--output-dir", str(tmp_path / "a-file")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'a-file'}: not a directory\n"
