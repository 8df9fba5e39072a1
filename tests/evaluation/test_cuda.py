"""On CUDA (marked `cuda`: skipped without a GPU; `make gpu-check` runs it): evaluation of a tiny random Llama
(with a tokenizer trained here, so no model package is needed) by both backends on the GPU in float32 — ours
through tools/evaluate.py on the converted checkpoint, transformers' in-process — gives the same per-option NLLs and
greedy generations, at TP=1 (and TP=2 where there are two GPUs)."""

import pytest

from megatron_ipt import assets
from megatron_ipt.evaluation import build_tasks, scoring, tasks
from tests.cuda import DEVICE, needs
from tests.evaluation.test_backends import NLL_TOLERANCE, _predictions, evaluate_tiny
from tests.evaluation.tiny_llama import make_tiny_llama, train_tiny_tokenizer
from tests.launch import run

pytestmark = pytest.mark.cuda
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    hf = make_tiny_llama(str(root / "hf"), tokenizer_dir=train_tiny_tokenizer(str(root / "tokenizer")))
    run("tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", hf, "--save", str(root / "ck"))
    task_dir = str(root / "tasks")
    build_tasks.build_tasks(assets.pydoc_topics()[:40], task_dir, max_passage_words=60, max_items=5)
    return hf, str(root / "ck"), task_dir


@pytest.mark.parametrize("tp", [pytest.param(1), pytest.param(2, marks=needs(2))])
def test_both_backends_agree_on_the_gpu(tiny, tmp_path, tp):
    from megatron_ipt.evaluation.hf_backend import HFModel

    hf_dir, ck, task_dir = tiny
    loaded = tasks.load_tasks([task_dir])
    hf_lm = HFModel(hf_dir, batch_size=4, dtype="float32")
    assert hf_lm.device.type == DEVICE
    hf_predictions = scoring.evaluate(loaded, hf_lm, max_new_tokens=12, log=lambda m: None).pop("_predictions")
    out = evaluate_tiny(
        ck, task_dir, "--tensor-model-parallel-size", str(tp), "--predictions-dir", str(tmp_path / "ours"), nproc=tp
    )
    assert "rc_sentence_choice" in out
    for task in loaded:
        ours, theirs = _predictions(str(tmp_path / "ours"), task.name), hf_predictions[task.name]
        assert len(ours) == len(theirs) == len(task.items)
        for a, b in zip(ours, theirs):
            assert a["pred"] == b["pred"], (task.name, a, b)
            if task.kind == tasks.CHOICE:
                assert max(abs(x - y) for x, y in zip(a["option_nll"], b["option_nll"])) < NLL_TOLERANCE
                assert len(set(round(x, 3) for x in a["option_nll"])) > 1  # options really differ
    assert any(p["pred"] for p in hf_predictions["rc_sentence_completion"])  # the random model says something
