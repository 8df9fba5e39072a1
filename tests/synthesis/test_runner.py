import json
import os

import pytest

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.runner import run
from tools.synthesize import main


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in.jsonl"
    texts = [p for p in opticks_paragraphs() if len(p.split()) > 30][:50]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path, texts


def contexts(out):
    return [e["context"] for f in sorted(os.listdir(out)) if f.endswith(".jsonl")
            for line in open(os.path.join(out, f)) for e in json.loads(line)]


def test_resume_after_kill_no_duplicates_no_loss(corpus, tmp_path):
    path, texts = corpus
    eng = build_engine("rules")
    calls = {"n": 0}

    class Dying:
        name = "rules"

        def generate(self, prompts):
            calls["n"] += 1
            if calls["n"] == 5:  # dies in the middle of part 2 (2 rounds per part)
                raise KeyboardInterrupt
            return eng.generate(prompts)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(str(path), str(out), Dying(), rounds=2, part_size=20)
    assert len(contexts(out)) == 40
    with pytest.raises(FileExistsError):
        run(str(path), str(out), eng, rounds=2, part_size=20)
    with pytest.raises(ValueError, match="different settings"):
        run(str(path), str(out), eng, rounds=2, part_size=10, resume=True)
    s = run(str(path), str(out), eng, rounds=2, part_size=20, resume=True)
    assert s["skipped_texts"] == 40 and s["texts"] == 10
    assert sorted(contexts(out)) == sorted(texts)
    assert json.load(open(out / "manifest-shard00000.json"))["complete"] is True


def test_shards_partition_input(corpus, tmp_path):
    path, texts = corpus
    out = tmp_path / "o"
    for k in range(3):
        main(["--input", str(path), "--output-dir", str(out), "--num-shards", "3", "--shard-index", str(k),
              "--rounds", "2"])
    assert sorted(contexts(out)) == sorted(texts)
    m = json.load(open(out / "manifest-shard00001.json"))
    assert m["texts"] == 17 and m["parts"][0]["file"] == "shard00001-part00000.jsonl"


def test_bad_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        run(str(p), str(tmp_path / "o"), build_engine("rules"))
