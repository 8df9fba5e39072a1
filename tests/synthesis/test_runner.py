import gzip
import json
import os
import re
import resource
import signal
import subprocess
import sys

import pytest

from megatron_ipt.assets import opticks_paragraphs
from megatron_ipt.io.inputs import InputError
from megatron_ipt.synthesis.config import SynthesisConfig
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.engines.rules import RulesEngine
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
        run(
            SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20), Dying(die_at=5)
        )  # dies in part 3 (2 rounds a part)
    assert len(contexts(out)) == 40 and not [f for f in os.listdir(out) if f.endswith(".tmp")]
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert manifest["complete"] is False and [p.get("done", False) for p in manifest["parts"]] == [True, True, False]
    with pytest.raises(FileExistsError, match="--resume"):
        run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20), eng)
    assert json.load(open(out / "manifest-shard00000.json")) == manifest  # a refused run leaves it alone
    with pytest.raises(ValueError, match="different input or settings"):
        run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=10, resume=True), eng)
    s = run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20, resume=True), eng)
    assert s["skipped_texts"] == 40 and s["texts"] == 10
    assert sorted(contexts(out)) == sorted(texts)
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert manifest["complete"] is True and manifest["parts"][0]["stats"]["pairs"] > 0


def test_resume_refuses_changed_input(corpus, tmp_path):
    path, texts = corpus
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20), Dying(die_at=3))
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = json.dumps({"id": 3, "text": "An edited text of the same length in records."}) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="the input changed"):
        run(
            SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20, resume=True),
            build_engine("rules"),
        )


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
    run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2), build_engine("rules"))
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
        run(SynthesisConfig(input=str(p), output_dir=str(tmp_path / "o")), build_engine("rules"))
    assert not os.path.exists(tmp_path / "o")
    s = run(SynthesisConfig(input=str(p), output_dir=str(tmp_path / "o"), skip_bad_lines=True), build_engine("rules"))
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
    s = run(
        SynthesisConfig(input=str(p), output_dir=str(out), max_model_len=512, max_new_tokens=112), build_engine("rules")
    )
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

    run(
        SynthesisConfig(input=str(path), output_dir=str(tmp_path / "o"), rounds=2, part_size=20),
        build_engine("rules"),
        progress=Bar,
    )
    assert seen[0] == ("total", None) and seen[-1] == "closed"  # streamed: the total is not known up front
    assert sum(seen[1:-1]) == 50 and len(seen[1:-1]) == 6  # 3 parts x 2 rounds


def file_counts(out):
    """Pairs and texts in the part files, counted from the files themselves."""
    got = entries(out)
    return {"pairs": sum(len(e["QA_list"]) for e in got), "texts": len(got)}


def summary_pairs(text):
    return int(re.search(r"^pairs +(\d+) ", text, re.M).group(1))


# Runs tools/synthesize.py and dies by SIGKILL at one rename of os.replace: the N-th time its target is TARGET.
KILLER = """
import os, signal, sys
target, nth = sys.argv[1], int(sys.argv[2])
real_replace, seen = os.replace, []
def replace(src, dst, *a, **k):
    if os.path.basename(str(dst)) == target:
        seen.append(dst)
        if len(seen) == nth and os.environ["KILL_WHEN"] == "before":
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *a, **k)
    if os.path.basename(str(dst)) == target and len(seen) == nth and os.environ["KILL_WHEN"] == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from tools.synthesize import main
sys.exit(main(sys.argv[3:]))
"""


def run_cli(args, env=None, preexec_fn=None):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, preexec_fn=preexec_fn, timeout=120
    )


@pytest.mark.parametrize(
    "target, nth, when",
    [
        ("shard00000-part00001.jsonl", 1, "after"),  # the part is in, its record not yet (the lost-stats case)
        ("shard00000-part00001.jsonl", 1, "before"),  # the record is pending, the part not yet in
        ("manifest-shard00000.json", 2, "after"),  # part 0's record is pending on disk, the part not in
    ],
)
def test_kill_9_anywhere_keeps_the_summary_equal_to_the_files(corpus, tmp_path, target, nth, when):
    path, texts = corpus
    flags = ["--input", str(path), "--rounds", "2", "--part-size", "20"]
    clean, out = tmp_path / "clean", tmp_path / "o"
    assert main([*flags, "--output-dir", str(clean)]) == 0
    killed = run_cli(["-c", KILLER, target, str(nth), *flags, "--output-dir", str(out)], env={"KILL_WHEN": when})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_cli(["tools/synthesize.py", *flags, "--output-dir", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert summary_pairs(resumed.stdout) == file_counts(out)["pairs"] == file_counts(clean)["pairs"]
    assert f"files          3 of 3 parts written, {len(texts)} texts" in resumed.stdout
    assert [open(out / f).read() for f in sorted(os.listdir(out)) if f.endswith(".jsonl")] == [
        open(clean / f).read() for f in sorted(os.listdir(clean)) if f.endswith(".jsonl")
    ]
    assert not [f for f in os.listdir(out) if ".tmp" in f]
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert sum(p["stats"]["pairs"] for p in manifest["parts"]) == file_counts(out)["pairs"]


def limit_file_size(limit):
    """A process whose files cannot grow beyond ``limit`` bytes: its writes fail as on a full disk (EFBIG
    instead of ENOSPC, the same OSError path)."""

    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return preexec


def test_disk_full_mid_run_is_a_clear_error_and_resume_continues(tmp_path):
    short = "The ray is bent at the surface of the glass, because the glass is denser than the air around it."
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": short if i < 10 else short * 20}) + "\n" for i in range(20)))
    flags = ["--input", str(path), "--part-size", "10"]
    clean, out = tmp_path / "clean", tmp_path / "o"
    assert main([*flags, "--output-dir", str(clean)]) == 0
    sizes = {f: os.path.getsize(clean / f) for f in os.listdir(clean)}
    limit = max(sizes["shard00000-part00000.jsonl"], sizes["manifest-shard00000.json"]) + 100
    assert sizes["shard00000-part00001.jsonl"] > limit  # part 1 cannot be written, all else can
    full = run_cli(["tools/synthesize.py", *flags, "--output-dir", str(out)], preexec_fn=limit_file_size(limit))
    part1 = out / "shard00000-part00001.jsonl"
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert f"error: {part1}: cannot write a part (File too large)" in full.stderr and "--resume" in full.stderr
    assert not part1.exists()
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert [p.get("done", False) for p in manifest["parts"]] == [True, False]
    resumed = run_cli(["tools/synthesize.py", *flags, "--output-dir", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "10 skipped as done" in resumed.stdout and not [f for f in os.listdir(out) if ".tmp" in f]
    assert [open(out / f).read() for f in sorted(os.listdir(out)) if f.endswith(".jsonl")] == [
        open(clean / f).read() for f in sorted(os.listdir(clean)) if f.endswith(".jsonl")
    ]


def test_unwritable_output_dir_stops_before_the_engine_is_built(corpus, tmp_path, capsys, monkeypatch):
    path, _ = corpus
    built = []
    monkeypatch.setattr("tools.synthesize.build_engine", lambda *a, **k: built.append(1))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["--input", str(path), "--output-dir", str(blocker / "out")]) == 1
    assert f"error: --output-dir {blocker / 'out'}: cannot create it, {blocker} is not a directory" in (
        capsys.readouterr().err
    )
    assert main(["--input", str(path), "--output-dir", str(blocker)]) == 1
    assert f"--output-dir {blocker}: exists and is not a directory" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["--input", str(path), "--output-dir", str(locked)]) == 1
        assert f"--output-dir {locked}: cannot write there (Permission denied)" in capsys.readouterr().err
    assert not built


def test_long_text_without_spaces_is_split_in_linear_time(tmp_path):
    """A long run without spaces is counted by its bytes (words x 1.5 counts it as one word), so it is cut into
    prompts that fit; and the split counts each character a bounded number of times, never the rest of the text
    per piece (that was quadratic: 1, 2, 4 MB took 2.3, 6.5, 28 s)."""
    from megatron_ipt.formats.wire import cook_context
    from megatron_ipt.synthesis.engines.base import words_x15
    from megatron_ipt.synthesis.rounds import split_long_text

    counted = []

    def counting(text):
        counted.append(len(text))
        return words_x15(text)

    run_of_x = "x" * 2_000_000
    pieces = split_long_text(run_of_x, count_tokens=counting)
    assert "".join(pieces) == run_of_x and len(pieces) > 500
    # each piece as long as its prompt allows: one token per byte of the run, plus the prompt's own words
    assert all(words_x15(cook_context(p)) <= 4096 - 400 and len(p) >= 3600 for p in pieces[:-1])
    assert sum(counted) < 10 * len(run_of_x)
    words = " ".join(opticks_paragraphs()).replace("\n", " ")
    words = (words * (2_000_000 // len(words) + 1))[:2_000_000]
    counted.clear()
    pieces = split_long_text(words, count_tokens=counting)
    assert " ".join(pieces) == words and len(pieces) > 100
    assert sum(counted) < 10 * len(words)


def test_words_x15_counts_ordinary_text_as_the_paper_does():
    from megatron_ipt.synthesis.engines.base import words_x15

    for text in opticks_paragraphs()[:100]:
        if max(len(w) for w in text.split(" ")) <= 32:
            assert words_x15(text) == len(text.split(" ")) * 1.5
    url = "https://example.org/a/very/long/path/to/some/page.html"
    assert words_x15(f"see {url}") == 1.5 + len(url) and words_x15("see " + "x" * 32) == 3.0


def test_a_shard_is_streamed_one_part_at_a_time(corpus, tmp_path, monkeypatch):
    """Generation starts after the first part's lines are read, not the whole input's, and no part is held
    beyond the next one being read: memory follows the part size, not the shard (the old code read the shard
    into lists before the first generation)."""
    from megatron_ipt.synthesis import runner

    path, texts = corpus
    read = []

    def counting(shard):
        for line in iter_lines(shard):
            read.append(1)
            yield line

    class Watching(RulesEngine):
        def _generate(self, prompts):
            lines_read.append(len(read))
            return super()._generate(prompts)

    from megatron_ipt.io.inputs import iter_lines

    monkeypatch.setattr(runner, "iter_lines", counting)
    lines_read = []
    run(
        SynthesisConfig(
            input=str(path), output_dir=str(tmp_path / "o"), rounds=2, part_size=5, num_shards=2, shard_index=1
        ),
        Watching(),
    )
    # part p (5 texts of shard 1 = records 1, 3, ..., 9 + 10p) is made once its last line, 10 (p + 1), is read
    assert lines_read == [10 * (p + 1) for p in range(5) for _ in range(2)]
    assert len(read) == 50


def test_resume_checks_the_input_part_by_part(corpus, tmp_path):
    """A resumed run refuses an input changed under any part, including one it would skip, and a change after
    the shard's last text, before the end of the input; the parts already there stay as they were."""
    path, texts = corpus
    out = tmp_path / "out"
    eng = build_engine("rules")
    run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=10, num_shards=2, shard_index=0), eng)
    kept = {f: open(out / f).read() for f in os.listdir(out)}
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    for k in (26, 49):  # record 26 is in part 2 of shard 0; record 49 is shard 1's, after shard 0's last text
        edited = lines[:k] + [json.dumps({"id": k, "text": "An edited text."}) + "\n"] + lines[k + 1 :]
        path.write_text("".join(edited))
        with pytest.raises(ValueError, match="the input changed"):
            run(
                SynthesisConfig(
                    input=str(path),
                    output_dir=str(out),
                    rounds=2,
                    part_size=10,
                    num_shards=2,
                    shard_index=0,
                    resume=True,
                ),
                eng,
            )
        assert {f: open(out / f).read() for f in os.listdir(out)} == kept
    path.write_text(original)
    s = run(
        SynthesisConfig(
            input=str(path), output_dir=str(out), rounds=2, part_size=10, num_shards=2, shard_index=0, resume=True
        ),
        eng,
    )
    assert s["skipped_texts"] == 25 and not s.get("texts")


def test_resume_of_a_manifest_with_only_the_whole_input_hash(corpus, tmp_path):
    """Manifests written before streaming have no per-part input hash: the whole input is hashed (in blocks,
    unparsed) before anything is skipped, with the same value the stream computes."""
    from megatron_ipt.synthesis.manifest import hash_input

    path, texts = corpus
    out = tmp_path / "out"
    eng = build_engine("rules")
    run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20), eng)
    manifest_path = out / "manifest-shard00000.json"
    manifest = json.load(open(manifest_path))
    assert hash_input([str(path)]) == manifest["input_sha256"]
    for part in manifest["parts"]:
        del part["input_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    assert (
        run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20, resume=True), eng)[
            "skipped_texts"
        ]
        == 50
    )
    manifest_path.write_text(json.dumps(manifest))
    path.write_text(path.read_text().replace("Light", "light", 1))
    with pytest.raises(ValueError, match="the input changed"):
        run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=20, resume=True), eng)


def test_a_late_bad_line_keeps_the_parts_before_it_and_resume_goes_on(corpus, tmp_path):
    path, texts = corpus
    clean, out = tmp_path / "clean", tmp_path / "o"
    eng = build_engine("rules")
    run(SynthesisConfig(input=str(path), output_dir=str(clean), rounds=2, part_size=10), eng)
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    path.write_text("".join(lines[:35] + ["{broken\n"] + lines[36:]))
    with pytest.raises(InputError, match=r"in.jsonl:36: malformed JSON"):
        run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=10), eng)
    assert sorted(f for f in os.listdir(out) if f.endswith(".jsonl")) == [
        f"shard00000-part0000{p}.jsonl" for p in range(3)
    ]
    path.write_text(original)
    s = run(SynthesisConfig(input=str(path), output_dir=str(out), rounds=2, part_size=10, resume=True), eng)
    assert s["skipped_texts"] == 30 and s["texts"] == 20
    assert {f: open(out / f).read() for f in os.listdir(out) if f.endswith(".jsonl")} == {
        f: open(clean / f).read() for f in os.listdir(clean) if f.endswith(".jsonl")
    }


def test_texts_the_rules_engine_cannot_mine_are_kept_without_pairs_not_failed(corpus, tmp_path, capsys):
    """Issue 25: a text without pairs ("Ok.": nothing to mine) is a normal, deterministic outcome, never a failed
    generation: 20 % of them at --max-failure-rate 0.05 finish with exit 0, counted as texts without pairs."""
    _, texts = corpus
    mixed = [t if i % 5 else "Ok." for i, t in enumerate(texts[:20])]  # 4 of 20 cannot be mined
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(mixed)))
    out, summary_json = tmp_path / "o", tmp_path / "summary.json"
    flags = ["--input", str(path), "--output-dir", str(out), "--rounds", "2", "--part-size", "10"]
    assert main([*flags, "--max-failure-rate", "0.05", "--summary-json", str(summary_json)]) == 0
    captured = capsys.readouterr()
    s = json.load(open(summary_json))
    assert s["failures"] == 0 and s["texts_without_pairs"] == 4 and s["stopped"] is None
    assert s["written"]["texts_without_pairs"] == 4 and s["written"].get("failures", 0) == 0
    assert s["usage"]["failures"] == 0
    assert "failures       0 generations of 20" in captured.out and "--resume" not in captured.err
    assert "without pairs  4 texts of 20 in this run" in captured.out
    manifest = json.load(open(out / "manifest-shard00000.json"))
    assert manifest["complete"] and all(p["failed"] == [] for p in manifest["parts"])
    assert {e["context"]: len(e["QA_list"]) for e in entries(out)}["Ok."] == 0
    # --resume has nothing to retry: the run is finished
    assert main([*flags, "--resume", "--summary-json", str(summary_json)]) == 0
    assert json.load(open(summary_json)).get("texts", 0) == 0


def test_progress_lines_off_a_terminal_come_every_interval_and_at_least_every_minute(monkeypatch, capsys):
    """Off a terminal: a line per --log-interval texts, and one at least every minute while texts finish (a CPU
    engine at a minute a text printed nothing for hours), with an ETA while the total is known and not reached."""
    import megatron_ipt.synthesis.runner as runner

    clock = [1000.0]
    monkeypatch.setattr(runner.time, "time", lambda: clock[0])
    bar = runner.Progress(total=10, log_interval=4)
    printed = []

    def step(seconds, n=1):
        clock[0] += seconds
        bar.update(n)
        printed.append(capsys.readouterr().err)

    step(10)  # 1 text after 10 s: nothing yet
    step(10)  # 2
    step(45)  # 3 texts, 65 s since the start: the minute's line
    step(1)  # 4: the interval's line
    step(30)  # 5: neither
    step(31, 5)  # 10 = total: the last line
    assert printed[0] == printed[1] == printed[4] == ""
    assert printed[2] == "synthesized 3/10 texts (0.05 texts/s, ETA 3 min)\n"  # 7 left at 3 per 65 s: 152 s
    assert printed[3] == "synthesized 4/10 texts (0.06 texts/s, ETA 2 min)\n"  # 6 left at 4 per 66 s: 99 s
    assert printed[5] == "synthesized 10/10 texts (0.08 texts/s)\n"
