"""tools/build_tuning_data.py make-standin: the stand-in collection from the embedded corpus."""

import filecmp
import json
import os

from megatron_ipt.formats.wire import cook_pairs, parse_pred
from megatron_ipt.tuning.standin import QA_TYPE, pieces
from tests.tuning.conftest import read_output
from tools.build_tuning_data import main


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_standin_layout_labels_and_held_out_documents(tmp_path, real_texts, capsys):
    out = tmp_path / "standin"
    assert main(["make-standin", "--output-dir", str(out), "--holdout-fraction", "0.2"]) == 0
    assert "STAND-IN" in capsys.readouterr().out
    summary = json.loads((out / "standin.json").read_text())
    assert "STAND-IN" in summary["what"] and "STAND-IN" in (out / "README.md").read_text()
    assert set(summary["datasets"]) == {"standin_pydoc", "standin_opticks"}
    train_contexts, valid_contexts = set(), set()
    for name in summary["datasets"]:
        for split, shard, contexts in (("train", "00000", train_contexts), ("valid", "00001", valid_contexts)):
            manifest = json.loads((out / name / "json" / f"{split}.json").read_text())
            assert manifest == [
                {"source": f"shard/{shard}.jsonl", "source_lang": "en", "weight": 1.0, "stand_in": True}
            ]
            rows = jsonl(out / name / "shard" / f"{shard}.jsonl")
            assert rows and all(r["QA_type"] == QA_TYPE and r["rc_name"] == name for r in rows)
            assert all(parse_pred(cook_pairs(r["QA_list"])) == r["QA_list"] for r in rows)  # the wire format's pairs
            contexts.update(r["context"] for r in rows)
    heldout = jsonl(out / "heldout.jsonl")
    held_texts = {r["text"] for r in heldout}
    assert valid_contexts <= held_texts and not held_texts & train_contexts  # held out whole, never tuned on
    held_docs = {r["id"].rsplit(".", 1)[0] for r in heldout}
    assert held_docs == set(summary["heldout_documents"])
    assert all(r["source"] in ("pydoc", "opticks") and set(r) == {"id", "source", "text"} for r in heldout)
    n_docs = sum(d["documents"] for d in summary["datasets"].values())
    assert abs(len(held_docs) - 0.2 * n_docs) <= 2


def test_standin_is_deterministic_and_never_replaces_other_data(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["make-standin", "--output-dir", str(a)]) == 0
    assert main(["make-standin", "--output-dir", str(b)]) == 0
    cmp = filecmp.dircmp(a, b)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in ("standin_pydoc/shard", "standin_opticks/shard"):
        assert not filecmp.dircmp(a / sub, b / sub).diff_files
    assert main(["make-standin", "--output-dir", str(a)]) == 1
    assert "--overwrite replaces it" in capsys.readouterr().err
    assert main(["make-standin", "--output-dir", str(a), "--overwrite"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["make-standin", "--output-dir", str(other), "--overwrite"]) == 1
    assert "not a stand-in collection" in capsys.readouterr().err and (other / "notes.txt").exists()
    assert not os.path.exists(f"{a}.inprogress")


def test_standin_builds_tuning_data_labelled_stand_in(tmp_path, mistral_model):
    out = tmp_path / "standin"
    assert main(["make-standin", "--output-dir", str(out)]) == 0
    flags = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", mistral_model]
    for split in ("train", "valid"):
        prefix = tmp_path / split
        assert main(["--input", str(out), "--split", split, *flags, "--output-prefix", str(prefix)]) == 0
        _, _, summary = read_output(str(prefix))
        assert summary["stand_in"] and all(d["stand_in"] for d in summary["datasets"].values())
        assert summary["totals"]["sequences"] > 0


def test_pieces_keep_to_the_word_limit(real_texts):
    for text in real_texts[:100]:
        parts = pieces(text, 60)
        assert all(len(p.split()) <= 60 for p in parts)
        assert " ".join(parts).split() == text.split()  # nothing lost, nothing reordered
