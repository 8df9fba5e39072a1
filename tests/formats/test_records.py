import json

import pytest

from megatron_ipt.formats.records import Collection, Document, Entry, TaskItem
from megatron_ipt.io.jsonl import LineError
from megatron_ipt.synthesis.config import SynthesisConfig
from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.runner import run


def test_collections_of_the_rules_engine_round_trip_byte_identical(tmp_path):
    from megatron_ipt.assets import opticks_paragraphs

    texts = [p for p in opticks_paragraphs() if len(p.split()) > 30][:30]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t, "source": "opticks"}) + "\n" for i, t in enumerate(texts)))
    run(SynthesisConfig(input=str(src), output_dir=str(tmp_path / "o"), rounds=3), build_engine("rules"))
    lines = (tmp_path / "o" / "shard00000-part00000.jsonl").read_text().splitlines()
    assert len(lines) == 10
    for line in lines:
        collection = Collection.from_json(json.loads(line))
        assert json.dumps(collection.to_json(), ensure_ascii=False) == line
    keys = list(json.loads(lines[0])[0])
    assert keys == ["context", "QA_list", "inherit_from_prev", "id", "source", "followed_by_next"]


@pytest.mark.parametrize(
    "value, problem",
    [
        ({"context": "t"}, "bad entry: entry 0: 'QA_list' must be a list, got null"),
        ({"context": 3, "QA_list": []}, "bad entry: entry 0: 'context' must be a string, got a number"),
        ({"context": "t", "QA_list": [{"Q": "q"}]}, "bad pair: entry 0: QA_list[0] must be an object with string"),
        ({"context": "t", "QA_list": [], "inherit_from_prev": "yes"}, "'inherit_from_prev' must be true or false"),
        ({"context": "t", "QA_list": [], "followed_by_next": 1}, "'followed_by_next' must be true or false"),
    ],
)
def test_an_invalid_entry_gives_one_clear_error(value, problem):
    with pytest.raises(LineError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Collection.from_json([value])


def test_a_tuning_row_is_not_a_collection():
    with pytest.raises(LineError, match=r"not a collection: .* got an object \(tuning-data rows go to --tuning-data\)"):
        Collection.from_json({"context": "t", "QA_list": []})
    row = Entry.from_json({"context": "t", "QA_list": [], "QA_type": "rules"})
    assert row.inherit_from_prev is False and row.carried == {"QA_type": "rules"}


def test_document_and_task_item_json():
    assert Document.from_json({"text": "t", "source": "raw"}).to_json() == {"text": "t", "source": "raw"}
    with pytest.raises(LineError, match="'source' must be a string"):
        Document.from_json({"text": "t"})
    choice = {"id": "q1", "options": ["a", "b"], "gold": 1, "prompt": "p"}
    assert list(TaskItem.from_json(choice).to_json().items()) == list(choice.items())
    generation = {"id": "q2", "answers": ["x"], "prompt": "p"}
    assert list(TaskItem.from_json(generation).to_json().items()) == list(generation.items())
    adaptllm = TaskItem.from_json({"input": "p", "options": ["a", "b"], "gold_index": 0, "class_id": 3})
    assert (adaptllm.prompt, adaptllm.gold, adaptllm.group, adaptllm.is_choice) == ("p", 0, 3, True)
