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

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from megatron_ipt.evaluation.metrics import CHOICE_METRICS, GENERATION_METRICS
from megatron_ipt.formats.records import TaskItem
from megatron_ipt.io.atomic import write_jsonl_atomic
from megatron_ipt.io.inputs import InputError, expand_inputs
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, read_jsonl

TASK_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
CHOICE, GENERATION = "multiple_choice", "generation"
DEFAULT_METRICS = {CHOICE: ["accuracy"], GENERATION: ["exact_match", "token_f1"]}
# The AdaptLLM harness's metric per task (github.com/microsoft/LMOps, adaptllm/). NER's entity-level F1 (nereval)
# is not implemented: NER reports exact match and token F1.
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
class Task:
    name: str
    path: str
    kind: str
    metrics: List[str]
    items: List[TaskItem]
    skipped: Counter = field(default_factory=Counter)  # problem kind -> lines skipped (--skip-bad-lines)
    skipped_examples: List[str] = field(default_factory=list)
    header: dict = field(default_factory=dict)


def task_name(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".gz", ".zst", ".zstd", ".jsonl", ".json", ".ndjson"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


# A task name becomes a file name (--predictions-dir/<name>.jsonl, export-lm-eval's <name>.yaml) and a TensorBoard
# tag (eval/<name>/<metric>), so it must be one plain, visible file name: nothing that could leave the directory.
MAX_NAME_BYTES = 200  # room for ".jsonl" and a temporary suffix within the usual 255-byte file-name limit


def name_problem(name) -> Optional[str]:
    """Why `name` cannot be a task name (None when it can)."""
    if not isinstance(name, str):
        return f"must be a string, got {json_type(name)}"
    if not name:
        return "is empty"
    if name.startswith("."):
        return "starts with '.' (a hidden file, or '.'/'..')"
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a path separator or a control character"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def _check_header(header) -> dict:
    if not isinstance(header, dict):
        raise LineError("bad header", "'task' must be an object")
    if "name" in header and name_problem(header["name"]):
        raise LineError(
            "bad header", f"task name {header['name']!r} {name_problem(header['name'])}: it names output files"
        )
    metrics = header.get("metrics", [])
    allowed = CHOICE_METRICS + GENERATION_METRICS
    if not isinstance(metrics, list) or any(m not in allowed for m in metrics):
        raise LineError("bad header", f"'metrics' must be a list of: {', '.join(allowed)}")
    return header


def _is_header(record) -> bool:
    return isinstance(record, dict) and "task" in record and "prompt" not in record and "input" not in record


def load_task(path: str, skip_bad_lines: bool = False, limit: Optional[int] = None) -> Task:
    """Read one task file. A bad line raises InputError(path, line, problem), or with `skip_bad_lines` is
    counted in `Task.skipped` (kind -> count) with the first examples kept."""
    header, items = {}, []
    bad = BadLines(skip=skip_bad_lines)

    def check(record) -> Optional[TaskItem]:
        """A header (returns None: nothing to score) or an item of the same kind as the items before it."""
        nonlocal header
        if _is_header(record):
            if items or header:
                raise LineError("bad header", 'a {"task": ...} header must be the first line')
            header = _check_header(record["task"])
            return None
        item = TaskItem.from_json(record)
        if items and item.is_choice != items[0].is_choice:
            kind, first = _kind(item), _kind(items[0])
            raise LineError(
                "mixed task",
                f"a {kind} item in a {first} task (line {items[0].line} is {first}); put each kind in its own file",
            )
        return item

    for number, item in read_jsonl(path, bad, check):
        if item is None:
            continue
        item.line = number
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(path, None, "no items" + (f" ({bad.total} bad lines skipped)" if bad.total else ""))
    kind = _kind(items[0])
    name = header["name"] if "name" in header else task_name(path)
    if name_problem(name):  # the header's name was checked with its line; this one comes from the file name
        raise InputError(path, None, f"task name {name!r} (from the file name) {name_problem(name)}; rename the file")
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
    return Task(name, path, kind, metrics, items, bad.counts, bad.examples, header)


def _kind(item: TaskItem) -> str:
    return CHOICE if item.is_choice else GENERATION


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


def write_task(path: str, items: List[TaskItem], header: Optional[dict] = None) -> None:
    """Write a task file atomically (temporary name, renamed when complete)."""
    write_jsonl_atomic(path, ([{"task": header}] if header else []) + [item.to_json() for item in items])
