"""Task files: JSONL, one item per line, in our format or AdaptLLM's; read with file:line errors.

Our format (the task name is the file name without `.jsonl`):

    {"task": {"name": "FPB", "metrics": ["accuracy", "weighted_f1"]}}   optional header, first line only
    {"id": "q1", "prompt": "...", "options": ["yes", "no", "maybe"], "gold": 0}      multiple choice
    {"id": "q2", "prompt": "...", "answers": ["Paris", "the city of Paris"]}         generation

AdaptLLM's domain tasks (HF datasets AdaptLLM/finance-tasks, AdaptLLM/medicine-tasks) are read as they are:
`input` is the prompt; `options` + `gold_index` make a multiple-choice item (`class_id` groups Headline's
sub-questions); `label` (a string or a list of strings) without `options` makes a generation item. A file named
after an AdaptLLM task (FPB.jsonl, ChemProt.jsonl, ...) gets that task's metric without a header.

Each option is scored as the continuation " " + option of the prompt (the harness's convention), so a prompt
ends without the trailing space, e.g. "...\nAnswer:".
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from megatron_ipt.data.jsonl import InputError, expand_inputs, open_binary
from megatron_ipt.evaluation.metrics import CHOICE_METRICS, GENERATION_METRICS
from megatron_ipt.fileio import write_jsonl_atomic

TASK_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
CHOICE, GENERATION = "multiple_choice", "generation"
DEFAULT_METRICS = {CHOICE: ["accuracy"], GENERATION: ["exact_match", "token_f1"]}
# The AdaptLLM harness's metric per task (reference §7.2). NER's entity-level F1 (nereval) is not implemented:
# NER reports exact match and token F1.
ADAPTLLM_METRICS = {
    "FPB": ["weighted_f1"],
    "FiQA_SA": ["weighted_f1"],
    "Headline": ["grouped_weighted_f1"],
    "ConvFinQA": ["numeric_em"],
    "NER": [],
    "ChemProt": ["micro_f1"],
    "RCT": ["micro_f1"],
    "MQP": [],
    "USMLE": [],
    "PubMedQA": [],
}


@dataclass
class Item:
    line: int
    prompt: str
    options: Optional[List[str]] = None  # multiple choice
    gold: Optional[int] = None
    answers: Optional[List[str]] = None  # generation
    group: object = None  # AdaptLLM class_id
    id: Optional[str] = None


@dataclass
class Task:
    name: str
    path: str
    kind: str
    metrics: List[str]
    items: List[Item]
    skipped: Counter = field(default_factory=Counter)  # problem kind -> lines skipped (--skip-bad-lines)
    skipped_examples: List[str] = field(default_factory=list)
    header: dict = field(default_factory=dict)


class _BadLine(ValueError):
    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


def task_name(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".gz", ".zst", ".zstd", ".jsonl", ".json", ".ndjson"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def _string_list(value, key: str, min_len: int) -> List[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _BadLine("bad field", f"{key!r} must be a string or a list of strings")
    if len(value) < min_len:
        raise _BadLine("bad field", f"{key!r} needs at least {min_len} entries, has {len(value)}")
    if any(not v.strip() for v in value):
        raise _BadLine("bad field", f"{key!r} has an empty string")
    return value


def parse_item(record, line: int) -> Item:
    if not isinstance(record, dict):
        raise _BadLine("not a JSON object")
    prompt_key = "prompt" if "prompt" in record else "input"
    prompt = record.get(prompt_key)
    if not isinstance(prompt, str):
        raise _BadLine("missing prompt", "needs a string 'prompt' (or AdaptLLM's 'input')")
    item = Item(
        line=line,
        prompt=prompt,
        group=record.get("class_id"),
        id=str(record["id"]) if record.get("id") is not None else None,
    )
    if "options" in record:
        item.options = _string_list(record["options"], "options", 2)
        gold_key = "gold" if "gold" in record else "gold_index"
        gold = record.get(gold_key)
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise _BadLine("bad gold", "a multiple-choice item needs an integer 'gold' (or 'gold_index')")
        if not 0 <= gold < len(item.options):
            raise _BadLine("bad gold", f"{gold_key} {gold} is out of range for {len(item.options)} options")
        item.gold = gold
        return item
    for key in ("answers", "label", "gold"):
        if key in record:
            item.answers = _string_list(record[key], key, 1)
            return item
    raise _BadLine("no gold", "needs 'options' + 'gold' (multiple choice) or 'answers' (generation)")


def _check_header(header) -> dict:
    if not isinstance(header, dict):
        raise _BadLine("bad header", "'task' must be an object")
    metrics = header.get("metrics", [])
    allowed = CHOICE_METRICS + GENERATION_METRICS
    if not isinstance(metrics, list) or any(m not in allowed for m in metrics):
        raise _BadLine("bad header", f"'metrics' must be a list of: {', '.join(allowed)}")
    return header


def load_task(path: str, skip_bad_lines: bool = False, limit: Optional[int] = None) -> Task:
    """Read one task file. A bad line raises InputError(path, line, problem), or with `skip_bad_lines` is
    counted in `Task.skipped` (kind -> count) with the first examples kept."""
    header, items, kind = {}, [], None
    skipped, examples = Counter(), []
    with open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise _BadLine("malformed JSON", str(e)) from None
                if isinstance(record, dict) and "task" in record and "prompt" not in record and "input" not in record:
                    if items or header:
                        raise _BadLine("bad header", 'a {"task": ...} header must be the first line')
                    header = _check_header(record["task"])
                    continue
                item = parse_item(record, number)
                item_kind = CHOICE if item.options is not None else GENERATION
                if kind is not None and item_kind != kind:
                    raise _BadLine(
                        "mixed task",
                        f"a {item_kind} item in a {kind} task (line {items[0].line} "
                        f"is {kind}); put each kind in its own file",
                    )
                kind = item_kind
            except _BadLine as e:
                if not skip_bad_lines:
                    raise InputError(path, number, str(e)) from None
                skipped[e.kind] += 1
                if len(examples) < 10:
                    examples.append(f"{path}:{number}: {e}")
                continue
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise InputError(path, None, "no items" + (f" ({sum(skipped.values())} bad lines skipped)" if skipped else ""))
    name = header.get("name") or task_name(path)
    metrics = list(DEFAULT_METRICS[kind])
    for metric in header.get("metrics") or ADAPTLLM_METRICS.get(name, []):
        if metric not in metrics:
            metrics.append(metric)
    allowed = CHOICE_METRICS if kind == CHOICE else GENERATION_METRICS
    wrong = [m for m in metrics if m not in allowed]
    if wrong:
        raise InputError(path, None, f"metrics {wrong} do not apply to a {kind} task (use: {', '.join(allowed)})")
    if "grouped_weighted_f1" in metrics and any(i.group is None for i in items):
        line = next(i.line for i in items if i.group is None)
        raise InputError(path, line, "grouped_weighted_f1 needs a 'class_id' on every item")
    return Task(name, path, kind, metrics, items, skipped, examples, header)


def load_tasks(specs: List[str], skip_bad_lines: bool = False, limit: Optional[int] = None) -> List[Task]:
    """Task files from files, globs or directories (their *.jsonl[.gz|.zst] files, sorted); names must be unique."""
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, n) for n in os.listdir(spec) if n.endswith(TASK_SUFFIXES))
            if not found:
                raise InputError(spec, None, f"directory has no task files ({', '.join(TASK_SUFFIXES)})")
            paths += found
        else:
            paths += expand_inputs(spec)
    tasks: Dict[str, Task] = {}
    for path in paths:
        task = load_task(path, skip_bad_lines, limit)
        if task.name in tasks:
            raise InputError(path, None, f"task name {task.name!r} is also used by {tasks[task.name].path}")
        tasks[task.name] = task
    return list(tasks.values())


def write_task(path: str, items: List[dict], header: Optional[dict] = None) -> None:
    """Write a task file atomically (temporary name, renamed when complete)."""
    write_jsonl_atomic(path, ([{"task": header}] if header else []) + list(items))
