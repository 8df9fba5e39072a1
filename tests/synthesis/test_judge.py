"""tools/judge_synthesizer.py: the scores, the demonstrations, and the tool end to end with the rules engine (a real
engine that needs no model)."""

import json
import subprocess
import sys

from megatron_ipt.formats.records import Entry
from megatron_ipt.synthesis import judge
from tests.conftest import REPO, write_jsonl
from tests.launch import run

VALID = "<QUE> What is it? <ANS> A prism. </END>\n\n<QUE> Pick one\nOptions:\n- red\n- blue <ANS> red </END>"


def test_synthesis_scores_count_what_the_parser_keeps():
    scores = judge.score_synthesis([VALID, "<QUE> no end <ANS> x", None, "junk </END>"])
    assert scores["format_validity"] == 25.0
    assert scores["pairs_per_text"] == 0.5
    assert scores["failed_generations"] == 1
    assert scores["pair_types"] == {"free-form": 50.0, "options": 50.0, "cot": 0.0}


def test_answers_stop_at_the_pair_end_and_score_f1():
    assert judge.answer_of(" red light </END>\n\n<QUE> more") == "red light"
    assert judge.answer_of(" blue</s>") == "blue"
    scores = judge.score_answers(["red light", "blue"], [" red light </END>", " the green"])
    assert scores["exact_match"] == 50.0 and scores["token_f1"] == 50.0


def test_few_shot_demonstration_is_another_row_of_the_same_dataset():
    rows = [Entry(f"text {i}", [{"Q": "q", "A": "a"}], carried={"rc_name": name}) for i, name in enumerate("ABAAB")]
    assert judge.demonstrations(rows) == [3, 4, 0, 2, 1]
    prompt = judge.prompts(rows, "few-shot")[2]
    assert prompt == "<s> <CON> text 0 </CON>\n\n<QUE> q <ANS> a </END></s><s> <CON> text 2 </CON>\n\n"


def test_the_tool_side_by_side_with_the_rules_engine(real_texts, tmp_path):
    rows = [
        {"context": text[:600], "QA_list": [{"Q": "What is this about?", "A": text[:40]}], "rc_name": "opticks"}
        for text in real_texts[-6:]
    ]
    rows.append({"context": "no pairs here", "QA_list": []})
    path = write_jsonl(tmp_path / "heldout.jsonl", rows)
    out = tmp_path / "judge.json"
    output = run(
        "tools/judge_synthesizer.py",
        "--input",
        path,
        "--engine",
        "rules",
        "--model",
        "rules",
        "--model",
        "rules",
        "--name",
        "one",
        "--name",
        "two",
        "--output",
        out,
        timeout=120,
    )
    assert "judging 6 held-out rows" in output
    assert "format validity (% texts with >= 1 valid pair)" in output
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"one", "two"}
    for setting in ("zero-shot", "few-shot"):
        scores = report["results"]["one"][setting]
        assert scores["texts"] == 6 and scores["questions"] == 6
        assert scores["format_validity"] > 50 and scores["pairs_per_text"] > 1
    bad = subprocess.run(
        [sys.executable, "tools/judge_synthesizer.py", "--input", str(tmp_path / "missing.jsonl"), "--model", "m"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_the_tool_reads_a_collection_valid_split_every_dataset_in_turn(tmp_path):
    from megatron_ipt.tuning.standin import make_standin

    make_standin(str(tmp_path / "standin"), max_words=60)
    out = tmp_path / "judge.json"
    run(
        "tools/judge_synthesizer.py",
        "--input",
        tmp_path / "standin",
        "--max-rows",
        "4",
        "--engine",
        "rules",
        "--model",
        "rules",
        "--output",
        out,
        timeout=120,
    )
    report = json.loads(out.read_text())
    assert report["rows"] == 4 and report["split"] == "valid"
    assert report["gold"]["texts"] == 4


def test_an_unwritable_output_fails_before_any_generation(tmp_path, capsys):
    from tools.judge_synthesizer import main

    path = write_jsonl(tmp_path / "rows.jsonl", [{"context": "some text", "QA_list": [{"Q": "q", "A": "a"}]}])
    (tmp_path / "file").write_text("a regular file, not a directory")
    argv = [
        "--input",
        str(path),
        "--engine",
        "rules",
        "--model",
        "rules",
        "--output",
        str(tmp_path / "file" / "j.json"),
    ]
    assert main(argv) == 1
    out = capsys.readouterr()
    assert out.err.startswith(f"error: {tmp_path}/file") and "judging" not in out.out
