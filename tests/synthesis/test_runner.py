import gzip
import json
import os

import pytest

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.io.inputs import InputError
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.rules import RulesEngine
from megatron_ipt.synthesis.runner import format_summary, run
from tools.synthesize import main


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in.jsonl"
    texts = [p for p in opticks_paragraphs() if len(p.split()) > 30][:50]
    path.write_text("".join(json.dumps({"id": i, "source": "opticks", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path, texts


def entries(out):
    return [
        e
        for f in sorted(os.listdir(out))
        if f.endswith(".jsonl")
        for line in open(os.path.join(out, f))
        for e in json.loads(line)
    ]


def contexts(out):
    return [e["context"] for e in entries(out)]


class Dying(RulesEngine):
    """The real rules engine, killed (as by Ctrl-C) on its n-th generate call."""

    def __init__(self, die_at):
        super().__init__()
        self.calls, self.die_at = 0, die_at

    def _generate(self, texts):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return super()._generate(texts)


def test_resume_after_kill_no_duplicates_no_loss(corpus, tmp_path):
    path, texts = corpus
    eng = build_engine("rules")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(str(path), str(out), Dying(die_at=5), rounds=2, part_size=20)  # dies in part 3 (2 rounds a part)
    assert len(contexts(out)) == 40 and not [f for f in os.listdir(out) if f.endswith(".tmp")]
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert manifest["complete"] is False and [p.get("done", False) for p in manifest["parts"]] == [True, True, False]
    with pytest.raises(FileExistsError, match="--resume"):
        run(str(path), str(out), eng, rounds=2, part_size=20)
    assert json.load(open(out / "manifest-shard00000.json")) == manifest  # a refused run leaves it alone
    with pytest.raises(ValueError, match="different input or settings"):
        run(str(path), str(out), eng, rounds=2, part_size=10, resume=True)
    s = run(str(path), str(out), eng, rounds=2, part_size=20, resume=True)
    assert s["skipped_texts"] == 40 and s["texts"] == 10
    assert sorted(contexts(out)) == sorted(texts)
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert manifest["complete"] is True and manifest["parts"][0]["stats"]["pairs"] > 0


def test_resume_refuses_changed_input(corpus, tmp_path):
    path, texts = corpus
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(str(path), str(out), Dying(die_at=3), rounds=2, part_size=20)
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = json.dumps({"id": 3, "text": "An edited text of the same length in records."}) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="the input changed"):
        run(str(path), str(out), build_engine("rules"), rounds=2, part_size=20, resume=True)


def test_shards_partition_input_and_carry_ids(corpus, tmp_path, capsys):
    path, texts = corpus
    out = tmp_path / "o"
    for k in range(3):
        assert (
            main(
                [
                    "--input",
                    str(path),
                    "--output-dir",
                    str(out),
                    "--num-shards",
                    "3",
                    "--shard-index",
                    str(k),
                    "--rounds",
                    "2",
                ]
            )
            == 0
        )
    assert sorted(contexts(out)) == sorted(texts)
    m = json.load(open(out / "manifest-shard00001.json"))
    assert m["texts"] == 17 and m["parts"][0]["file"] == "shard00001-part00000.jsonl"
    by_id = {e["id"]: e for e in entries(out)}
    assert sorted(by_id) == list(range(50))
    assert all(by_id[i]["context"] == texts[i] and by_id[i]["source"] == "opticks" for i in range(50))
    shard1 = [e["id"] for line in open(out / "shard00001-part00000.jsonl") for e in json.loads(line)]
    assert sorted(shard1) == list(range(1, 50, 3))  # record i goes to shard i % 3
    summary = capsys.readouterr().out
    assert "pairs/text" not in summary and "per text" in summary and "CoT" in summary and "failures" in summary


def test_collections_keep_the_reference_structure(corpus, tmp_path):
    path, _ = corpus
    out = tmp_path / "o"
    run(str(path), str(out), build_engine("rules"), rounds=2)
    for line in open(out / "shard00000-part00000.jsonl"):
        chain = json.loads(line)
        assert isinstance(chain, list) and chain
        for k, e in enumerate(chain):
            assert isinstance(e["context"], str) and isinstance(e["inherit_from_prev"], bool)
            assert all(set(p) == {"Q", "A"} for p in e["QA_list"])
            if k < len(chain) - 1:
                assert isinstance(e["followed_by_next"], bool)


def test_bad_lines_error_or_skip_and_count(tmp_path):
    p = tmp_path / "bad.jsonl.gz"
    good = "The prism bends light because its faces are inclined to each other at an angle."
    with gzip.open(p, "wt") as f:
        f.write(
            json.dumps({"text": good})
            + "\n\n{broken\n[1]\n"
            + json.dumps({"txt": "x"})
            + "\n"
            + json.dumps({"text": 5})
            + "\n"
            + json.dumps({"text": "  "})
            + "\n"
        )
    with pytest.raises(InputError, match=r"bad.jsonl.gz:3: malformed JSON"):
        run(str(p), str(tmp_path / "o"), build_engine("rules"))
    assert not os.path.exists(tmp_path / "o")
    s = run(str(p), str(tmp_path / "o"), build_engine("rules"), skip_bad_lines=True)
    assert s["texts"] == 1 and s["blank_lines"] == 1
    assert s["skipped_lines"] == {
        "malformed JSON": 1,
        "not a JSON object": 1,
        "missing key": 1,
        "not a string": 1,
        "empty text": 1,
    }
    assert s["skipped_examples"][0].startswith(f"{p}:3: malformed JSON")
    text = format_summary(s)
    assert "skipped lines  5" in text and "bad.jsonl.gz:7: empty text" in text


def test_cli_error_names_file_and_line(tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok ok ok ok ok."}\n{broken\n')
    assert main(["--input", str(p), "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2: malformed JSON" in err and "--skip-bad-lines" in err


def test_long_text_split_pieces_carry_their_record(tmp_path):
    words = " ".join(f"word{i}." for i in range(900))
    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps({"id": "doc-7", "text": words}) + "\n")
    out = tmp_path / "o"
    s = run(str(p), str(out), build_engine("rules"), max_model_len=512, max_new_tokens=112)
    got = entries(out)
    assert s["pieces"] == len(got) > 1
    assert [e["piece"] for e in got] == list(range(len(got))) and {e["pieces"] for e in got} == {len(got)}
    assert {e["id"] for e in got} == {"doc-7"} and " ".join(e["context"] for e in got) == words


def test_progress_counts_every_text(corpus, tmp_path):
    path, texts = corpus
    seen = []

    class Bar:
        def __init__(self, total):
            seen.append(("total", total))

        def update(self, n):
            seen.append(n)

        def close(self):
            seen.append("closed")

    run(str(path), str(tmp_path / "o"), build_engine("rules"), rounds=2, part_size=20, progress=Bar)
    assert seen[0] == ("total", 50) and seen[-1] == "closed"
    assert sum(seen[1:-1]) == 50 and len(seen[1:-1]) == 6  # 3 parts x 2 rounds
