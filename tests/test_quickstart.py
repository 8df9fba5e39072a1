"""`make quickstart` runs examples/quickstart.sh: it must work end to end on this machine, every stage."""

import json
import os
import subprocess
import sys

from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_ipt.training import checkpoint
from tests.conftest import REPO


def _scalars(tb_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tb_dir)
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_quickstart_script_runs_end_to_end(tmp_path):
    env = dict(
        os.environ,
        QUICKSTART_DIR=str(tmp_path),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    result = subprocess.run(
        ["bash", os.path.join(REPO, "examples", "quickstart.sh")], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    # held-out documents never reach synthesis or training
    held_out = [json.loads(line)["id"] for line in open(tmp_path / "held_out.jsonl")]
    trained = [json.loads(line)["id"] for line in open(tmp_path / "train.jsonl")]
    assert len(held_out) == 535 // 5 and len(trained) == 535 - 535 // 5 and not set(held_out) & set(trained)
    # the packed dataset holds every document of the mixed corpus, augmented and raw
    prefix = str(tmp_path / "quickstart_text_document")
    assert f"--data-path {prefix}" in result.stdout
    with open(tmp_path / "corpus" / "summary.json") as f:
        corpus = json.load(f)
    ds = IndexedDataset(prefix)
    assert len(ds.document_indices) - 1 == corpus["documents"]
    assert ds.sequence_lengths.sum() > 150_000
    del ds
    # training: 300 steps at TP=2, loss falls, committed checkpoint, TensorBoard curves
    assert checkpoint.latest_iteration(str(tmp_path / "checkpoints")) == 300
    loss = _scalars(str(tmp_path / "tensorboard"), "lm loss")
    assert sorted(loss) == list(range(1, 301)) and loss[300] < loss[1] - 3.0, (loss[1], loss[300])
    # evaluation of that checkpoint on the tasks built from the held-out documents, reported at its iteration
    with open(tmp_path / "eval_report.json") as f:
        report = json.load(f)
    assert report["iteration"] == 300 and len(report["tasks"]) == 3
    assert _scalars(str(tmp_path / "tensorboard"), "eval/rc_sentence_choice/accuracy").keys() == {300}
