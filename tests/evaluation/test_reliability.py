"""Hostile task files and outputs (issue 13): a task name never leaves --predictions-dir, bad names and text are
refused with file:line before any model loads, outputs are checked before the work, and a disk that fills at the
end names the path and leaves no report behind."""

import errno
import json
import os

import pytest

from megatron_ipt.evaluation import tasks
from megatron_ipt.io.inputs import InputError
from tests.conftest import write_jsonl
from tests.evaluation.test_tasks import _cli
from tests.evaluation.tiny_llama import make_tiny_llama

ITEM = {"prompt": "The capital of France is", "answers": ["Paris"]}


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../../escaped", "starts with '.'"),
        ("/tmp/escaped", "holds a path separator"),
        ("a/b", "holds a path separator"),
        ("a\\b", "holds a path separator"),
        ("", "is empty"),
        ("a\u0000b", "holds a path separator or a control character"),
        ("..", "starts with '.'"),
        (123, "must be a string, got a number"),
        (None, "must be a string, got null"),
        ("x" * 201, "is longer than 200 bytes"),
    ],
)
def test_unsafe_task_names_are_refused_with_file_and_line(tmp_path, name, problem):
    path = write_jsonl(tmp_path / "t.jsonl", [{"task": {"name": name}}, ITEM])
    with pytest.raises(InputError) as e:
        tasks.load_task(path)
    assert str(e.value).startswith(f"{path}:1: bad header: task name {name!r} {problem}")


def test_a_file_name_that_cannot_name_outputs_is_refused(tmp_path):
    path = write_jsonl(tmp_path / ".hidden.jsonl", [ITEM])
    with pytest.raises(InputError, match=r"\.hidden\.jsonl: task name '\.hidden' \(from the file name\) starts with"):
        tasks.load_task(path)
    # ordinary names still work, including spaces and non-ASCII letters
    assert tasks.load_task(write_jsonl(tmp_path / "t.jsonl", [{"task": {"name": "Fin QA ü-1"}}, ITEM])).name == (
        "Fin QA ü-1"
    )


def _refuse_to_load():
    pytest.fail("the model was loaded although the inputs or outputs are bad")


def test_cli_refuses_a_traversing_name_before_the_model_and_writes_nothing(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    path = write_jsonl(work / "t.jsonl", [{"task": {"name": "../escaped"}}, ITEM])
    preds = work / "preds"
    argv = ["--tasks", path, "--hf-model", str(tmp_path / "no-model"), "--predictions-dir", str(preds)]
    assert _cli().main(argv) == 1
    assert f"error: {path}:1: bad header: task name '../escaped'" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["t.jsonl"]


def test_a_lone_surrogate_is_a_file_line_error_before_the_model(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "ok", "answers": ["a"]}\n{"prompt": "bad \\ud800 text", "answers": ["a"]}\n')
    assert _cli().main(["--tasks", str(path), "--hf-model", str(tmp_path / "no-model")]) == 1
    assert f"error: {path}:2: invalid Unicode: key 'prompt' has a lone surrogate U+D800" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, target, problem",
    [
        ("--output", "a_file/report.json", "cannot write there"),
        ("--output", "a_dir", "is a directory"),
        ("--predictions-dir", "a_file", "exists and is not a directory"),
        ("--predictions-dir", "a_file/preds", "cannot write there"),
        ("--tensorboard-dir", "a_file/tb", "cannot write there"),
    ],
)
def test_unwritable_outputs_fail_before_the_model_loads(tmp_path, capsys, flag, target, problem):
    from megatron_ipt.evaluation import scoring

    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "a_dir").mkdir()
    path = write_jsonl(tmp_path / "t.jsonl", [ITEM])
    out = str(tmp_path / target)
    kwargs = {"--output": "output", "--predictions-dir": "predictions_dir", "--tensorboard-dir": "tensorboard_dir"}
    assert scoring.run(_refuse_to_load, [path], **{kwargs[flag]: out}) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {out}: {problem}"), err


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return make_tiny_llama(str(tmp_path_factory.mktemp("tiny") / "hf"))


def test_disk_full_at_the_end_names_the_path_and_leaves_no_report(tiny_hf, tmp_path, capsys, monkeypatch):
    path = write_jsonl(tmp_path / "qa.jsonl", [ITEM])
    report, preds = tmp_path / "out" / "report.json", tmp_path / "preds"
    argv = ["--tasks", path, "--hf-model", tiny_hf, "--max-new-tokens", "3", "--output", str(report)]
    assert _cli().main(argv + ["--predictions-dir", str(preds)]) == 0  # the same run on a disk with room
    assert json.loads(report.read_text())["tasks"]["qa"]["items"] == 1 and (preds / "qa.jsonl").exists()
    report.unlink()
    capsys.readouterr()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)  # every atomic write flushes to disk before its rename
    assert _cli().main(argv) == 1
    captured = capsys.readouterr()
    assert f"error: --output {report}: could not write: No space left on device" in captured.err
    assert "Traceback" not in captured.err and "exact_match" in captured.out  # the scores are still printed
    assert not report.exists()


@pytest.mark.parametrize("damage", ["truncated weights", "bad config value"])
def test_a_damaged_hf_model_is_one_line(tiny_hf, tmp_path, damage):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_hf, model)
    if damage == "truncated weights":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100000])
    else:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "rms_norm_eps": "tiny"}))
    path = write_jsonl(tmp_path / "qa.jsonl", [ITEM])
    with pytest.raises(SystemExit) as e:
        _cli().main(["--tasks", path, "--hf-model", str(model)])
    assert str(e.value).startswith(f"--hf-model {model}: cannot load it with transformers: ")
    expected = "deserializing header" if damage == "truncated weights" else "rms_norm_eps"
    assert "\n" not in str(e.value) and expected in str(e.value)
