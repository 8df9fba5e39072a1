"""tools/build_tuning_data.py on real text (Opticks, pydoc) with real tokenizers (SmolLM2's tokenizer.json, Mistral's
SentencePiece model), read back as training reads it."""

import filecmp
import json
import os

import numpy as np

from megatron_ipt.formats.wire import BOS, EOS, cook_context, cook_pairs, parse_pred
from megatron_ipt.tuning import sequences
from megatron_ipt.tuning.sequences import Example, select_examples
from tests.conftest import write_jsonl
from tests.tuning.conftest import dataset_folder, read_output, split_examples
from tools.build_tuning_data import main


def build(prefix, flags, *args):
    assert main([*args, *flags, "--output-prefix", str(prefix)]) == 0
    return read_output(str(prefix))


def decoded_examples(tokenizer, tokens, masks):
    """Every packed example as (prompt text, target text), per sequence."""
    return [
        [(tokenizer.decode(p), tokenizer.decode(t)) for p, t in split_examples(tok, mask)]
        for tok, mask in zip(tokens, masks)
    ]


def test_both_layouts_render_as_the_parser_reads_and_mask_only_pairs(
    tmp_path, opticks_rows, pydoc_rows, smol_flags, smol_tokenizer, capsys
):
    """A collection folder (manifest) and a plain JSONL file; every packed example decodes to exactly the wire text
    synthesis builds (context unmasked; pairs + </s> masked), and the parser gives the row's pairs back."""
    folder = dataset_folder(tmp_path / "coll", "OpticksQA", [opticks_rows], {"train": [("shard/00000.jsonl", 1.0)]})
    plain = write_jsonl(tmp_path / "pydoc.jsonl", pydoc_rows)  # rc_name "pydoc" names the dataset
    tokens, masks, summary = build(tmp_path / "out", smol_flags, "--input", folder, plain, "--seq-length", "2048")
    assert set(summary["datasets"]) == {"OpticksQA", "pydoc"}
    assert summary["datasets"]["OpticksQA"]["rows_read"] == len(opticks_rows)
    assert summary["datasets"]["pydoc"]["rows_read"] == len(pydoc_rows)
    by_context = {r["context"]: ("OpticksQA", r) for r in opticks_rows} | {
        r["context"]: ("pydoc", r) for r in pydoc_rows
    }
    seen, loss_tokens = [], 0
    for sequence in decoded_examples(smol_tokenizer, tokens, masks):
        datasets = set()
        for prompt, target in sequence:
            assert prompt.startswith(BOS + " <CON> ") and prompt.endswith(" </CON>\n\n")
            dataset, row = by_context[prompt[len(BOS + " <CON> ") : -len(" </CON>\n\n")]]
            assert prompt == cook_context(row["context"])
            assert target == cook_pairs(row["QA_list"]) + EOS  # byte-equal to what synthesis renders
            assert parse_pred(target[: -len(EOS)]) == row["QA_list"]
            datasets.add(dataset)
            seen.append(row["context"])
        assert len(datasets) == 1  # packed from one dataset only
    assert sorted(seen) == sorted(by_context)  # every row once
    loss_tokens = sum(int(m.sum()) for m in masks)
    assert summary["totals"]["loss_tokens"] == loss_tokens and summary["totals"]["tokens"] == sum(map(len, tokens))
    assert max(map(len, tokens)) <= 2049
    assert "OpticksQA" in capsys.readouterr().out


def test_sentencepiece_literal_markers_are_bos_and_eos(tmp_path, opticks_rows, mistral_flags):
    """With Mistral's tokenizer the literal <s>/</s> are its BOS/EOS ids (as the released synthesizer's tokenizer
    makes them), each example starts with BOS (no loss) and its loss ends on EOS."""
    plain = write_jsonl(tmp_path / "rows.jsonl", opticks_rows[:20])
    tokens, masks, summary = build(tmp_path / "out", mistral_flags, "--input", plain, "--seq-length", "1024")
    assert summary["tokenizer"]["literal_markers_as_ids"] == {"<s>": 1, "</s>": 2}
    for tok, mask in zip(tokens, masks):
        for prompt, target in split_examples(tok, mask):
            assert prompt[0] == 1 and 1 not in prompt[1:] and 2 not in prompt
            assert target[-1] == 2 and 2 not in target[:-1] and 1 not in target


def test_sampling_prefers_most_pairs_with_seeded_ties():
    examples = [Example(f"f:{i}", f"text {i}", [{"Q": "q", "A": "a"}] * n) for i, n in enumerate([1, 3, 2, 3, 1, 2, 3])]
    chosen = select_examples(examples, cap=4, seed=1, dataset="d")
    counts = sorted(len(e.pairs) for e in chosen)
    assert counts == [2, 3, 3, 3]  # all three 3-pair rows, then one of the two 2-pair rows
    assert chosen == select_examples(examples, cap=4, seed=1, dataset="d")  # deterministic
    picks = {tuple(e.where for e in select_examples(examples, 4, seed, "d") if len(e.pairs) == 2) for seed in range(20)}
    assert picks == {("f:2",), ("f:5",)}  # the tie is broken by the seed, both ways
    assert len(select_examples(examples, cap=0, seed=1, dataset="d")) == 7


def test_cap_applies_per_dataset(tmp_path, opticks_rows, pydoc_rows, smol_flags):
    a = dataset_folder(tmp_path / "c", "A", [opticks_rows], {"train": [("shard/00000.jsonl", 1)]})
    b = dataset_folder(tmp_path / "c", "B", [pydoc_rows], {"train": [("shard/00000.jsonl", 1)]})
    _, _, summary = build(tmp_path / "o", smol_flags, "--input", str(tmp_path / "c"), "--max-examples-per-dataset", "5")
    assert a and b and {d: s["rows_selected"] for d, s in summary["datasets"].items()} == {"A": 5, "B": 5}
    most = sorted((len(r["QA_list"]) for r in opticks_rows), reverse=True)[:5]
    a_pairs = sum(v for k, v in summary["datasets"]["A"].items() if k.startswith("pairs:"))
    assert a_pairs == sum(most)  # the five rows with the most pairs


def test_manifest_weights_are_honoured(tmp_path, opticks_rows, smol_flags, smol_tokenizer):
    shards = [opticks_rows[:10], opticks_rows[10:20], opticks_rows[20:60]]
    manifest = {"train": [("shard/00000.jsonl", 2), ("shard/00001.jsonl", 0), ("shard/00002.jsonl", 0.5)]}
    folder = dataset_folder(tmp_path / "c", "W", shards, manifest)
    tokens, masks, summary = build(tmp_path / "o", smol_flags, "--input", folder, "--seq-length", "4096")
    d = summary["datasets"]["W"]
    assert d["rows_read"] == 60 and d["rows_weighted_out"] == 10 + (40 - (d["rows_selected"] - 10))
    assert 10 < d["rows_selected"] - 10 < 30  # about half of the 0.5-weighted shard
    assert d["examples"] == 2 * 10 + (d["rows_selected"] - 10)
    counts = {}
    for sequence in decoded_examples(smol_tokenizer, tokens, masks):
        contexts = [p for p, _ in sequence]
        assert len(contexts) == len(set(contexts))  # never two copies of a row in one sequence
        for c in contexts:
            counts[c] = counts.get(c, 0) + 1
    assert all(counts[cook_context(r["context"])] == 2 for r in shards[0])
    assert not any(cook_context(r["context"]) in counts for r in shards[1])
    assert {d["weight"] for d in summary["datasets"]["W"]["sources"]} == {2.0, 0.0, 0.5}


def test_valid_split_reads_the_valid_manifest(tmp_path, opticks_rows, smol_flags):
    manifests = {"train": [("shard/00000.jsonl", 1)], "valid": [("shard/00001.jsonl", 1)]}
    folder = dataset_folder(tmp_path / "c", "S", [opticks_rows[:30], opticks_rows[30:35]], manifests)
    _, _, summary = build(tmp_path / "v", smol_flags, "--input", folder, "--split", "valid")
    assert summary["datasets"]["S"]["rows_read"] == 5 and summary["split"] == "valid"


def test_deterministic_and_seed_dependent(tmp_path, opticks_rows, pydoc_rows, mistral_flags):
    plain = write_jsonl(tmp_path / "rows.jsonl", opticks_rows + pydoc_rows)
    args = ["--input", plain, "--seq-length", "1024"]
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main([*args, *mistral_flags, "--seed", seed, "--output-prefix", str(tmp_path / name)]) == 0
    files = ["_text_document.bin", "_text_document.idx", "_loss_mask_document.bin", "_loss_mask_document.idx"]
    assert all(filecmp.cmp(tmp_path / f"a{f}", tmp_path / f"b{f}", shallow=False) for f in files)
    assert (tmp_path / "a.tuning.json").read_text().replace("/a_", "/b_") == (tmp_path / "b.tuning.json").read_text()
    assert not filecmp.cmp(tmp_path / "a_text_document.bin", tmp_path / "c_text_document.bin", shallow=False)


def test_too_long_examples_are_skipped_and_counted(tmp_path, opticks_rows, smol_flags, smol_tokenizer):
    plain = write_jsonl(tmp_path / "rows.jsonl", opticks_rows)
    tokens, masks, summary = build(tmp_path / "o", smol_flags, "--input", plain, "--seq-length", "200")
    t = summary["totals"]
    assert t["too_long"] > 0 and t["examples_packed"] + t["too_long"] == t["examples"] == len(opticks_rows)
    assert max(map(len, tokens)) <= 201
    assert sum(len(split_examples(tok, m)) for tok, m in zip(tokens, masks)) == t["examples_packed"]


def test_bad_rows_stop_with_file_line_or_are_skipped_and_counted(tmp_path, opticks_rows, smol_flags, capsys):
    bad_pair = dict(opticks_rows[1], QA_list=[{"Q": "Which? <ANS> this", "A": "that"}])
    empty_answer = dict(opticks_rows[2], QA_list=[{"Q": "Which?", "A": "  "}])
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(opticks_rows[0]), "{not json", json.dumps(bad_pair), json.dumps({"context": 3, "QA_list": []})]
    lines += [json.dumps(empty_answer), json.dumps(opticks_rows[3])]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    assert main(["--input", str(path), *smol_flags, "--output-prefix", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}:2: malformed JSON" in err and "--skip-bad-lines" in err
    assert not os.path.exists(f"{out}_text_document.idx") and not os.path.exists(f"{out}.tuning.json")

    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert main(["--input", str(path), *smol_flags, "--output-prefix", str(out)]) == 1
    assert f"{path}:2: bad pair: QA_list[0] contains the wire-format marker '<ANS>'" in capsys.readouterr().err

    path.write_text("\n".join(lines) + "\n")
    assert main(["--input", str(path), *smol_flags, "--output-prefix", str(out), "--skip-bad-lines"]) == 0
    _, _, summary = read_output(str(out))
    assert summary["skipped_lines"] == {"bad entry": 1, "bad pair": 2, "malformed JSON": 1}
    assert summary["totals"]["rows_read"] == 2


def test_bad_manifests_are_named(tmp_path, opticks_rows, smol_flags, capsys):
    folder = dataset_folder(tmp_path / "c", "M", [opticks_rows[:3]], {"train": [("shard/00009.jsonl", 1)]})
    assert main(["--input", folder, *smol_flags, "--output-prefix", str(tmp_path / "o")]) == 1
    assert "M/json/train.json: item 0: source 'shard/00009.jsonl': no such file" in capsys.readouterr().err
    assert main(["--input", folder, "--split", "valid", *smol_flags, "--output-prefix", str(tmp_path / "o")]) == 1
    assert "no json/valid.json manifest (--split valid)" in capsys.readouterr().err
    (tmp_path / "c" / "M" / "json" / "train.json").write_text('[{"source": "shard/00000.jsonl", "weight": -1}]')
    assert main(["--input", folder, *smol_flags, "--output-prefix", str(tmp_path / "o")]) == 1
    assert "'weight' must be a number >= 0, got -1" in capsys.readouterr().err


def test_decontamination_drops_overlapping_pairs_and_rows(tmp_path, opticks_rows, smol_flags, smol_tokenizer):
    """The corpus stage's n-gram check: an evaluation set quoting one row's context and another row's answer."""
    rows = [dict(r) for r in opticks_rows[:20]]
    pair_row = 5
    answer = "A Prism refracts the violet-making Rays more than the red-making Rays, and so parts the Colours."
    rows[pair_row]["QA_list"] = rows[pair_row]["QA_list"] + [{"Q": "What does a Prism do to the Rays?", "A": answer}]
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"text": rows[0]["context"]}, {"text": "Q: " + answer}])
    plain = write_jsonl(tmp_path / "rows.jsonl", rows)
    tokens, masks, summary = build(tmp_path / "o", smol_flags, "--input", plain, "--decontaminate", evals)
    examples = [e for seq in decoded_examples(smol_tokenizer, tokens, masks) for e in seq]
    assert cook_context(rows[0]["context"]) not in [p for p, _ in examples]  # the row whose context overlaps
    assert not any(answer in t for _, t in examples)  # the pair that overlaps
    assert any(p == cook_context(rows[pair_row]["context"]) for p, _ in examples)  # its other pairs stay
    d = summary["datasets"]["opticks"]
    assert d["rows_decontaminated"] >= 1 and d["pairs_decontaminated"] >= 1
    assert summary["decontamination"]["eval_texts"] == 2


def test_an_interrupted_build_leaves_nothing_that_looks_finished(
    tmp_path, opticks_rows, mistral_flags, monkeypatch, capsys
):
    plain = write_jsonl(tmp_path / "rows.jsonl", opticks_rows)
    out = tmp_path / "o"
    build(out, mistral_flags, "--input", plain)  # a finished earlier build
    finished = sorted(p for p in os.listdir(tmp_path) if p.startswith("o"))
    before = {p: (tmp_path / p).read_bytes() for p in finished}
    real = sequences.IndexedDatasetWriter.add_batch

    def fail_on_text(self, tokens, lengths, *rest):
        if self.prefix.endswith("_text_document"):
            raise OSError(28, "No space left on device")
        return real(self, tokens, lengths, *rest)

    monkeypatch.setattr(sequences.IndexedDatasetWriter, "add_batch", fail_on_text)
    assert main(["--input", plain, *mistral_flags, "--output-prefix", str(out), "--seed", "7"]) == 1
    err = capsys.readouterr().err  # one line, no traceback
    assert err.startswith("error: ") and "no space left on device" in err and "Traceback" not in err
    # The earlier build is untouched (text, mask and summary still belong together), nothing half-written is left.
    assert sorted(os.listdir(tmp_path)) == sorted(finished + ["rows.jsonl"])
    assert {p: (tmp_path / p).read_bytes() for p in finished} == before
    monkeypatch.undo()
    tokens, masks, _ = build(out, mistral_flags, "--input", plain, "--seed", "7")  # a rerun finishes
    assert all(len(t) == len(m) for t, m in zip(tokens, masks))
    assert np.concatenate(masks).max() == 1


def test_a_sequence_never_holds_two_copies_of_a_row():
    from collections import Counter

    from megatron_ipt.tuning.sequences import Packed, pack_examples

    a, b = Example("f:1", "a", [{"Q": "q", "A": "x"}]), Example("f:2", "b", [{"Q": "q", "A": "y"}])
    encoded = [([1, 5, 6, 7], 2), ([1, 8, 9], 2), ([1, 5, 6, 7], 2)]
    packed, stats = Packed(), Counter()
    pack_examples("d", [a, b, a], encoded, 100, np.uint16, packed, stats)
    assert [t.tolist() for t in packed.tokens] == [[1, 5, 6, 7, 1, 8, 9], [1, 5, 6, 7]]
    assert [m.tolist() for m in packed.masks] == [[0, 0, 1, 1, 0, 0, 1], [0, 0, 1, 1]]


def test_an_unwritable_output_is_one_line_before_the_work(tmp_path, opticks_rows, mistral_flags, capsys):
    plain = write_jsonl(tmp_path / "rows.jsonl", opticks_rows)
    (tmp_path / "file").write_text("a regular file, not a directory")
    assert main(["--input", plain, *mistral_flags, "--output-prefix", str(tmp_path / "file" / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path / "file") in err and "Traceback" not in err
