"""Typed records for the JSON that passes between stages, each validated in one place (`from_json`, which raises
LineError naming the bad field) and written back exactly as read (`to_json`: same keys, same order).

- `Entry`: one synthesized text, ``{"context", "QA_list": [{"Q", "A"}], "inherit_from_prev", <carried keys>,
  "followed_by_next"}``. The layout of the released synthesizer's collections (instruction-pretrain/
  instruction-synthesizer model card; Cheng et al. 2024, arXiv 2406.14491, section 2): an entry inherits from
  the previous one when that one served as its demonstration. Carried keys (the input record's ``id``,
  ``source``, ``piece``/``pieces`` of a split text, a tuning row's ``QA_type``...) are kept in order.
- `Collection`: one synthesis chain, a JSON list of entries on one line (tools/synthesize.py writes them,
  tools/build_corpus.py reads them).
- `Document`: one line of the mixed corpus, ``{"text", "source"}`` (tools/build_corpus.py -> preprocess_data.py).
- `TaskItem`: one evaluation item (tools/evaluate.py build-tasks writes them, tools/evaluate.py reads them), in
  our format or AdaptLLM's (see megatron_ipt/evaluation/tasks.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from megatron_ipt.io.jsonl import LineError, json_type

ENTRY_KEYS = ("context", "QA_list", "inherit_from_prev", "followed_by_next")


@dataclass
class Entry:
    context: str
    qa_list: List[Dict[str, str]]  # the pairs as written, {"Q": str, "A": str} each
    inherit_from_prev: bool = False
    followed_by_next: Optional[bool] = None  # None: not decided (the last round), and not written
    carried: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value, where: str = "") -> "Entry":
        """Raises LineError("bad entry" or "bad pair") naming the field; `where` ("entry 3") prefixes it."""
        at = f"{where}: " if where else ""
        if not isinstance(value, dict):
            raise LineError("bad entry", f"{at}expected an object, got {json_type(value)}")
        if not isinstance(value.get("context"), str):
            raise LineError("bad entry", f"{at}'context' must be a string, got {json_type(value.get('context'))}")
        qa_list = value.get("QA_list")
        if not isinstance(qa_list, list):
            raise LineError("bad entry", f"{at}'QA_list' must be a list, got {json_type(qa_list)}")
        for j, qa in enumerate(qa_list):
            if not (isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str)):
                raise LineError(
                    "bad pair", f"{at}QA_list[{j}] must be an object with string 'Q' and 'A', got {qa!r:.80}"
                )
        for key in ("inherit_from_prev", "followed_by_next"):
            if not isinstance(value.get(key, False), bool):
                raise LineError("bad entry", f"{at}{key!r} must be true or false")
        return cls(
            value["context"],
            qa_list,
            value.get("inherit_from_prev", False),
            value.get("followed_by_next"),
            {k: v for k, v in value.items() if k not in ENTRY_KEYS},
        )

    def to_json(self) -> dict:
        out = {"context": self.context, "QA_list": self.qa_list, "inherit_from_prev": self.inherit_from_prev}
        out.update(self.carried)
        if self.followed_by_next is not None:  # decided by the round after this entry's, so written last
            out["followed_by_next"] = self.followed_by_next
        return out


@dataclass
class Collection:
    """One synthesis chain, oldest entry first."""

    entries: List[Entry]

    @classmethod
    def from_json(cls, value) -> "Collection":
        if not isinstance(value, list) or not value:
            raise LineError(
                "not a collection",
                f"expected a non-empty JSON list of entries, got {json_type(value)}"
                + (" (tuning-data rows go to --tuning-data)" if isinstance(value, dict) else ""),
            )
        return cls([Entry.from_json(entry, f"entry {i}") for i, entry in enumerate(value)])

    def to_json(self) -> list:
        return [entry.to_json() for entry in self.entries]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Entry:
        return self.entries[index]


@dataclass(frozen=True)
class Document:
    """One line of the mixed corpus: a pre-training text and the source it was drawn from."""

    text: str
    source: str

    @classmethod
    def from_json(cls, value) -> "Document":
        if not isinstance(value, dict):
            raise LineError("not a JSON object", f"got {json_type(value)}")
        for key in ("text", "source"):
            if not isinstance(value.get(key), str):
                raise LineError("bad document", f"{key!r} must be a string, got {json_type(value.get(key))}")
        return cls(value["text"], value["source"])

    def to_json(self) -> dict:
        return {"text": self.text, "source": self.source}


@dataclass
class TaskItem:
    """A multiple-choice item (`options` + `gold`) or a generation item (`answers`)."""

    prompt: str
    options: Optional[List[str]] = None
    gold: Optional[int] = None
    answers: Optional[List[str]] = None
    group: object = None  # AdaptLLM's class_id (Headline's sub-questions)
    id: Optional[str] = None
    line: Optional[int] = None  # where it was read; not part of the JSON

    @classmethod
    def from_json(cls, value) -> "TaskItem":
        """Our format or AdaptLLM's; raises LineError naming the problem."""
        if not isinstance(value, dict):
            raise LineError("not a JSON object")
        prompt = value.get("prompt" if "prompt" in value else "input")
        if not isinstance(prompt, str):
            raise LineError("missing prompt", "needs a string 'prompt' (or AdaptLLM's 'input')")
        item = cls(prompt, group=value.get("class_id"), id=str(value["id"]) if value.get("id") is not None else None)
        if "options" in value:
            item.options = _string_list(value["options"], "options", 2)
            gold_key = "gold" if "gold" in value else "gold_index"
            gold = value.get(gold_key)
            if isinstance(gold, bool) or not isinstance(gold, int):
                raise LineError("bad gold", "a multiple-choice item needs an integer 'gold' (or 'gold_index')")
            if not 0 <= gold < len(item.options):
                raise LineError("bad gold", f"{gold_key} {gold} is out of range for {len(item.options)} options")
            item.gold = gold
            return item
        for key in ("answers", "label", "gold"):
            if key in value:
                item.answers = _string_list(value[key], key, 1)
                return item
        raise LineError("no gold", "needs 'options' + 'gold' (multiple choice) or 'answers' (generation)")

    @property
    def is_choice(self) -> bool:
        return self.options is not None

    def to_json(self) -> dict:
        """Our format: id, options + gold or answers, class_id, prompt (absent fields left out)."""
        fields = (
            ("id", self.id),
            ("options", self.options),
            ("gold", self.gold),
            ("answers", self.answers),
            ("class_id", self.group),
            ("prompt", self.prompt),
        )
        return {key: value for key, value in fields if value is not None}


def _string_list(value, key: str, min_len: int) -> List[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LineError("bad field", f"{key!r} must be a string or a list of strings")
    if len(value) < min_len:
        raise LineError("bad field", f"{key!r} needs at least {min_len} entries, has {len(value)}")
    if any(not v.strip() for v in value):
        raise LineError("bad field", f"{key!r} has an empty string")
    return value
