"""tools/build_corpus.py end to end on real synthesized collections, counted with the real Mistral tokenizer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from megatron_ipt.corpus import SAMPLE_GENERAL_INSTRUCTIONS
from megatron_ipt.tokenizers import build_tokenizer
from tests.conftest import REPO, one_error_line, write_jsonl
from tools.build_corpus import main


@pytest.fixture(scope="module")
def tokenizer_flags(mistral_model):
    return ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", mistral_model]


@pytest.fixture(scope="module")
def tokenizer(mistral_model):
    return build_tokenizer("SentencePieceTokenizer", mistral_model)


def build(out, tokenizer_flags, *args):
    assert main([*args, *tokenizer_flags, "--output-dir", str(out)]) == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    docs = [json.loads(line) for name in summary["outputs"] for line in open(os.path.join(out, name))]
    return summary, docs


def recount(tokenizer, docs, source=None):
    texts = [d["text"] for d in docs if source is None or d["source"] == source]
    return int(sum(len(t) for t in tokenizer.encode_batch(texts))) if texts else 0


def test_general_recipe_converts_a_fifth_of_texts(
    tmp_path, collections_file, real_collections, tokenizer_flags, tokenizer, capsys
):
    summary, docs = build(
        tmp_path / "out",
        tokenizer_flags,
        "--recipe",
        "general",
        "--collections",
        collections_file,
        "--docs-per-shard",
        "100",
    )
    r = summary["render"]
    total = sum(len(c) for c in real_collections)
    assert r["texts:total"] == total and abs(r["texts:converted"] - 0.2 * total) < 2  # whole chains of M=2
    assert len(summary["outputs"]) == -(-len(docs) // 100) and all(n.startswith("corpus-") for n in summary["outputs"])
    sources = {d["source"] for d in docs}
    assert sources == {"augmented", "raw"}
    # every text is in the corpus exactly once: raw as is, or inside its augmented document
    contexts = [e.context for c in real_collections for e in c]
    body = "\n".join(d["text"] for d in docs)
    assert all(body.count(t) >= 1 for t in contexts)
    assert sum(d["source"] == "raw" for d in docs) == total - r["entries:augmented"]
    # token counts are the real tokenizer's, per source
    for source in sources:
        assert summary["sources"][source]["tokens"] == recount(tokenizer, docs, source)
    assert summary["tokens"] == recount(tokenizer, docs)
    out = capsys.readouterr().out
    assert "augmented" in out and "--output-prefix" in out and "corpus-*.jsonl" in out


def test_baselines_match_the_token_budget(tmp_path, collections_file, tuning_file, tokenizer_flags, tokenizer):
    general, gdocs = build(
        tmp_path / "general",
        tokenizer_flags,
        "--recipe",
        "general",
        "--collections",
        collections_file,
        "--tuning-data",
        tuning_file,
        "--tuning-upsample",
        "2",
    )
    budget = general["tokens"]
    vanilla, vdocs = build(
        tmp_path / "vanilla",
        tokenizer_flags,
        "--recipe",
        "vanilla",
        "--collections",
        collections_file,
        "--token-budget-from",
        str(tmp_path / "general"),
    )
    mixed, mdocs = build(
        tmp_path / "mix",
        tokenizer_flags,
        "--recipe",
        "mix",
        "--collections",
        collections_file,
        "--tuning-data",
        tuning_file,
        "--tuning-upsample",
        "2",
        "--token-budget",
        str(budget),
    )
    assert {d["source"] for d in vdocs} == {"raw"} and {d["source"] for d in mdocs} == {"raw", "tuning"}
    for summary, docs in ((vanilla, vdocs), (mixed, mdocs)):
        longest = max(len(t) for t in tokenizer.encode_batch([d["text"] for d in docs]))
        # each source is within half a document of its target
        assert abs(summary["tokens"] - budget) <= len(summary["sources"]) * longest / 2 + 1
        assert abs(summary["tokens"] - budget) / budget < 0.02
    # the tuning data's share relative to raw is what the recipe asks for, before scaling to the budget
    t, r = mixed["sources"]["tuning"], mixed["sources"]["raw"]
    want = t["target_tokens"] / r["target_tokens"]
    assert abs(t["tokens"] / r["tokens"] - want) / want < 0.03
    # tuning is rendered twice (fresh templates each copy) then scaled: about 2x one pass per raw pass
    assert abs(want - 2 * (t["pool_tokens"] / 2) / r["pool_tokens"]) / want < 1e-9
    assert general["sources"]["tuning"]["documents"] == general["sources"]["tuning"]["pool_documents"]
    rows = [json.loads(l) for l in open(tuning_file)]
    assert general["sources"]["tuning"]["pool_documents"] == 2 * len(rows)
    tuning_docs = {d["text"] for d in gdocs if d["source"] == "tuning"}
    assert len(tuning_docs) > 1.5 * len(rows)  # the two copies of a row are rendered with different templates


def test_domain_recipe_mixes_general_instructions_one_to_one_by_tokens(
    tmp_path, collections_file, tokenizer_flags, tokenizer
):
    for ratio in ("1", "0.5"):
        summary, docs = build(
            tmp_path / f"d{ratio}",
            tokenizer_flags,
            "--recipe",
            "domain",
            "--collections",
            collections_file,
            "--general-instructions",
            SAMPLE_GENERAL_INSTRUCTIONS,
            "--instruction-ratio",
            ratio,
        )
        s = summary["sources"]
        domain = s["augmented"]["tokens"] + s["raw"]["tokens"]
        general = recount(tokenizer, docs, "general_instruction")
        assert general == s["general_instruction"]["tokens"]
        longest = max(
            len(t) for t in tokenizer.encode_batch([d["text"] for d in docs if d["source"] == "general_instruction"])
        )
        assert abs(general - float(ratio) * domain) <= longest / 2
        assert s["general_instruction"]["documents"] > s["general_instruction"]["pool_documents"]  # 40 rows, repeated
        assert summary["render"]["texts:converted"] == summary["render"]["texts:total"]
    inst = next(d["text"] for d in docs if d["source"] == "general_instruction")
    rows = [json.loads(l) for l in open(SAMPLE_GENERAL_INSTRUCTIONS)]
    assert inst in {f"{r['question']} {r['response']}" for r in rows}


def test_per_source_outputs_print_blend_weights(tmp_path, collections_file, tokenizer_flags, capsys):
    out = tmp_path / "per"
    summary, docs = build(
        out,
        tokenizer_flags,
        "--recipe",
        "domain",
        "--collections",
        collections_file,
        "--general-instructions",
        SAMPLE_GENERAL_INSTRUCTIONS,
        "--per-source-outputs",
    )
    expected = {f"{k}.jsonl" for k, v in summary["sources"].items() if v["pool_documents"]}
    assert sorted(summary["outputs"]) == sorted(expected) and "augmented.jsonl" in expected
    rows = [l for l in open(out / "general_instruction.jsonl")]
    assert len(rows) == 40  # each source once; the blend weights do the mixing
    printed = capsys.readouterr().out
    line = next(l for l in printed.splitlines() if l.strip().startswith("--data-path"))
    fields = line.split()[1:]
    weights = dict(zip(fields[1::2], map(float, fields[0::2])))
    assert abs(sum(weights.values()) - 1) < 1e-5
    assert abs(weights[f"{out}/general_instruction_text_document"] - 0.5) < 1e-5  # 1:1 by tokens
    s = summary["sources"]
    domain = s["augmented"]["pool_tokens"] + s["raw"]["pool_tokens"]
    assert abs(weights[f"{out}/augmented_text_document"] - 0.5 * s["augmented"]["pool_tokens"] / domain) < 1e-5
    assert f"--output-prefix {out}/augmented " in printed


def test_deterministic_and_seed_dependent(tmp_path, collections_file, tokenizer_flags):
    a = build(tmp_path / "a", tokenizer_flags, "--recipe", "general", "--collections", collections_file)[1]
    b = build(tmp_path / "b", tokenizer_flags, "--recipe", "general", "--collections", collections_file)[1]
    c = build(tmp_path / "c", tokenizer_flags, "--recipe", "general", "--collections", collections_file, "--seed", "1")[
        1
    ]
    assert a == b and a != c


def test_bad_collection_lines_error_or_are_skipped_and_counted(tmp_path, real_collections, tokenizer_flags, capsys):
    good = [json.dumps(c.to_json()) for c in real_collections[:20]]
    bad = [
        '{"context": "a tuning row, not a collection", "QA_list": []}',
        "[not json",
        json.dumps([{"context": "x", "QA_list": [{"Q": "q"}]}]),
        json.dumps([{"QA_list": []}]),
    ]
    path = tmp_path / "cols.jsonl"
    path.write_text("\n".join(good[:5] + bad[:2] + good[5:] + bad[2:]) + "\n")
    out = tmp_path / "out"
    assert main(["--recipe", "general", "--collections", str(path), *tokenizer_flags, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:6: not a collection" in err and "--tuning-data" in err and "--skip-bad-lines" in err
    assert not out.exists() and not list(tmp_path.glob("out.*"))
    summary, docs = build(out, tokenizer_flags, "--recipe", "general", "--collections", str(path), "--skip-bad-lines")
    assert summary["skipped_lines"] == {"not a collection": 1, "malformed JSON": 1, "bad pair": 1, "bad entry": 1}
    printed = capsys.readouterr().out
    assert "skipped lines 4" in printed and f"{path}:23: bad pair: entry 0: QA_list[0]" in printed
    assert f"{path}:24: bad entry: entry 0: 'context' must be a string" in printed
    assert summary["render"]["texts:total"] == sum(len(c) for c in real_collections[:20])


def test_decontamination_through_the_cli(tmp_path, real_collections, collections_file, tokenizer_flags):
    leaked = real_collections[3][0].context
    evals = write_jsonl(
        tmp_path / "eval.jsonl",
        [{"passage": leaked, "label": 1}, {"passage": "Nothing in this sentence appears anywhere in the corpus."}],
    )
    summary, docs = build(
        tmp_path / "out",
        tokenizer_flags,
        "--recipe",
        "vanilla",
        "--collections",
        collections_file,
        "--eval-sets",
        evals,
        "--eval-keys",
        "passage",
    )
    assert summary["decontamination"]["eval_texts"] == 2
    assert summary["decontamination"]["collections: texts dropped"] >= 1
    assert all(leaked not in d["text"] for d in docs)
    flagged = [json.loads(l) for l in open(tmp_path / "out" / "decontam-flagged.jsonl")]
    assert any(f["where"].endswith(":4 entry 0") and f["what"] == "text" for f in flagged)


def test_output_dir_is_replaced_only_when_asked(tmp_path, collections_file, tokenizer_flags, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    args = ["--recipe", "vanilla", "--collections", collections_file, *tokenizer_flags, "--output-dir", str(out)]
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["corpus-00000.jsonl", "summary.json"]
    assert (
        main(
            [
                "--recipe",
                "domain",
                "--collections",
                collections_file,
                *tokenizer_flags,
                "--output-dir",
                str(tmp_path / "d"),
            ]
        )
        == 1
    )
    assert "--general-instructions" in capsys.readouterr().err
    assert (
        main(
            [
                "--recipe",
                "vanilla",
                "--collections",
                collections_file,
                "--tuning-data",
                collections_file,
                *tokenizer_flags,
                "--output-dir",
                str(tmp_path / "v"),
            ]
        )
        == 1
    )
    assert "does not use --tuning-data" in capsys.readouterr().err


def test_output_packs_with_preprocess_data(tmp_path, collections_file, tokenizer_flags, tokenizer):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from tools.preprocess_data import main as preprocess

    summary, docs = build(tmp_path / "c", tokenizer_flags, "--recipe", "general", "--collections", collections_file)
    prefix = str(tmp_path / "c" / "corpus")
    assert (
        preprocess(
            [
                "--input",
                str(tmp_path / "c" / "corpus-*.jsonl"),
                "--output-prefix",
                prefix,
                "--workers",
                "1",
                *tokenizer_flags,
            ]
        )
        == 0
    )
    ds = IndexedDataset(prefix + "_text_document")
    assert len(ds.document_indices) - 1 == len(docs) and int(ds.sequence_lengths.sum()) == summary["tokens"]
    del ds
    assert np.isclose(sum(s["share"] for s in summary["sources"].values()), 1.0)


def test_a_failed_build_leaves_the_previous_corpus_and_no_partial_output(
    tmp_path, collections_file, tokenizer_flags, monkeypatch, capsys
):
    """Disk full on the second shard: one line naming the file, the previous corpus intact, nothing else left."""
    import errno

    from megatron_ipt.corpus import build as build_module

    out = tmp_path / "out"
    build(out, tokenizer_flags, "--recipe", "vanilla", "--collections", collections_file)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    real_write, calls = build_module._write_lines, []

    def full_disk_write(path, lines, shown):
        calls.append(path)
        with build_module.naming(shown):
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")  # what a failed write() raises
            real_write(path, lines, shown)

    monkeypatch.setattr(build_module, "_write_lines", full_disk_write)
    capsys.readouterr()
    args = ["--recipe", "general", "--collections", collections_file, *tokenizer_flags, "--output-dir", str(out)]
    assert main([*args, "--docs-per-shard", "50", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {out}/corpus-00001.jsonl: no space left on device\n"
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_general_counts_unsynthesized_raw_input_in_the_fraction(
    tmp_path, collections_file, real_collections, tokenizer_flags
):
    from megatron_ipt.assets import opticks_paragraphs

    extra = opticks_paragraphs()[300:500]
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"body": t} for t in extra])
    summary, docs = build(
        tmp_path / "out",
        tokenizer_flags,
        "--recipe",
        "general",
        "--collections",
        collections_file,
        "--raw-input",
        raw,
        "--text-key",
        "body",
        "--convert-fraction",
        "0.5",
    )
    r = summary["render"]
    synthesized = sum(len(c) for c in real_collections)
    assert r["texts:total"] == synthesized + len(extra)
    assert abs(r["texts:converted"] - 0.5 * r["texts:total"]) <= 1  # here: every collection is converted
    raw_docs = {d["text"] for d in docs if d["source"] == "raw"}
    assert set(extra) <= raw_docs


def test_deeply_nested_line_is_a_line_error(tmp_path, real_collections, tokenizer_flags, capsys):
    """100,000 `[` on a line: RecursionError (a traceback) before; now file:line, or a counted skip."""
    path = tmp_path / "cols.jsonl"
    good = [json.dumps(c.to_json()) for c in real_collections[:5]]
    path.write_text("\n".join(good[:2] + ["[" * 100_000] + good[2:]) + "\n")
    out = tmp_path / "out"
    assert main(["--recipe", "general", "--collections", str(path), *tokenizer_flags, "--output-dir", str(out)]) == 1
    assert f"error: {path}:3: too deeply nested" in capsys.readouterr().err
    summary, _ = build(out, tokenizer_flags, "--recipe", "general", "--collections", str(path), "--skip-bad-lines")
    assert summary["skipped_lines"] == {"too deeply nested": 1}


def test_killed_at_any_step_the_next_run_finds_the_old_or_the_new_corpus(tmp_path, collections_file, tokenizer_flags):
    """build_corpus --overwrite killed (no cleanup runs) at each file-system step of its write and publish: the
    next run's cleanup leaves the previous corpus or the new one, complete, and no leftover."""
    from megatron_ipt.io import atomic
    from tests.io.test_atomic import kill_at_step

    out = tmp_path / "out"
    args = ["--collections", collections_file, *tokenizer_flags, "--output-dir", str(out), "--overwrite"]

    def content():
        return {n: (out / n).read_bytes() for n in sorted(os.listdir(out))} if out.exists() else None

    def without_times(corpus):
        return {n: b if n != "summary.json" else json.loads(b)["outputs"] for n, b in corpus.items()}

    assert main(["--recipe", "general", *args]) == 0
    new = without_times(content())
    assert main(["--recipe", "vanilla", *args]) == 0
    old = without_times(content())
    step, finished = 1, False
    while not finished:
        finished = kill_at_step(step, lambda: main(["--recipe", "general", *args]))
        atomic.remove_stale(str(tmp_path))
        assert without_times(content()) in (old, new), step
        assert os.listdir(tmp_path) == ["out"], step
        if not finished and without_times(content()) != old:
            assert main(["--recipe", "vanilla", *args]) == 0
        step += 1
    assert step > 3 and without_times(content()) == new


@pytest.mark.parametrize("variant", ["flipped", "truncated", "empty", "directory"])
def test_a_broken_tokenizer_model_is_one_line_naming_it(tmp_path, collections_file, broken_tokenizer_models, variant):
    """Issue 25: a corrupt SentencePiece model (or a directory) was a sentencepiece RuntimeError traceback once the
    token budget needed the tokenizer."""
    model = broken_tokenizer_models[variant]
    argv = [sys.executable, os.path.join(REPO, "tools", "build_corpus.py"), "--recipe", "general", "--collections"]
    argv += [collections_file, "--token-budget", "1000", "--output-dir", str(tmp_path / "out")]
    argv += ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", model]
    result = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
    expect = "is a directory" if variant == "directory" else "not a SentencePiece model"
    one_error_line(result, f"--tokenizer-model {model}: {expect}")


def test_an_unfinished_synthesis_is_refused_unless_asked_for(tmp_path, tokenizer_flags, capsys):
    """Issue 25: --collections of a synthesis run that was killed (or stopped) after a few of its parts used to
    build a corpus of those parts, exit 0, no warning. Its manifest knows the parts not finished: refused, naming
    them, unless --allow-incomplete-synthesis asks for what is there (the summary then says what is missing)."""
    from megatron_ipt.assets import opticks_paragraphs
    from megatron_ipt.synthesis.config import SynthesisConfig
    from megatron_ipt.synthesis.engines import build_engine
    from megatron_ipt.synthesis.engines.base import Generation
    from megatron_ipt.synthesis.engines.rules import RulesEngine
    from megatron_ipt.synthesis.runner import run

    class Breaking(RulesEngine):
        """The rules engine, one generate call a part (M=1): killed (as by Ctrl-C) or failing every text from
        its n-th call."""

        def __init__(self, at, kill):
            super().__init__()
            self.calls, self.at, self.kill = 0, at, kill

        def _generate(self, texts):
            self.calls += 1
            if self.calls >= self.at:
                if self.kill:
                    raise KeyboardInterrupt
                return [Generation(None) for _ in texts]
            return super()._generate(texts)

    path = tmp_path / "in.jsonl"
    texts = [p for p in opticks_paragraphs() if len(p.split()) > 20][:60]
    write_jsonl(path, [{"id": i, "text": t} for i, t in enumerate(texts)])

    def synth(out, engine, **kw):
        return run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=1, part_size=2, **kw), engine)

    def corpus(collections, name, *more):
        flags = ["--recipe", "general", "--collections", str(collections), *tokenizer_flags]
        return main([*flags, "--output-dir", str(tmp_path / name), *more])

    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        synth(killed, Breaking(4, kill=True))  # parts 0-2 written, killed in part 3 of 30
    assert corpus(killed, "c1") == 1
    err = capsys.readouterr().err
    assert f"--collections {killed}: the synthesis is not finished: {killed}: shard 0: parts 3 and later" in err
    assert "--resume" in err and "--allow-incomplete-synthesis" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "c1")
    assert corpus(killed, "c2", "--allow-incomplete-synthesis") == 0
    out = capsys.readouterr().out
    summary = json.load(open(tmp_path / "c2" / "summary.json"))
    assert summary["render"]["texts:total"] == 6 and summary["incomplete_synthesis"]["texts_missing"] is None
    assert "warning: built from an unfinished synthesis" in out and "shard 0: parts 3 and later" in out

    stopped = tmp_path / "stopped"  # stopped by --max-failure-rate in part 3: it read its whole input
    assert synth(stopped, Breaking(4, kill=False))["stopped"] == 3
    assert corpus(stopped, "c3") == 1
    assert f"{stopped}: shard 0: parts 4-29 of 30 not finished;" in capsys.readouterr().err
    assert corpus(stopped, "c4", "--allow-incomplete-synthesis") == 0
    missing = json.load(open(tmp_path / "c4" / "summary.json"))["incomplete_synthesis"]
    assert (missing["parts_missing"], missing["texts_missing"], missing["shards"]) == (26, 52, 1)
    assert "52 texts of 1 shard(s) missing" in capsys.readouterr().out

    # finished (--resume): built as before, with or without the flag, and nothing said missing
    rules = build_engine("rules")
    synth(stopped, rules, resume=True)
    synth(tmp_path / "clean", rules)
    assert corpus(stopped, "c5") == 0 and corpus(tmp_path / "clean", "c6", "--allow-incomplete-synthesis") == 0
    capsys.readouterr()
    docs = [open(tmp_path / c / "corpus-00000.jsonl").read() for c in ("c5", "c6")]
    assert docs[0] == docs[1]
    summary = json.load(open(tmp_path / "c5" / "summary.json"))
    assert summary["incomplete_synthesis"] is None and summary["render"]["texts:total"] == 60
