"""Export task files as lm-evaluation-harness tasks (tools/evaluate.py export-lm-eval).

Why an export and not a new on-disk format: lm-eval never reads a bare JSONL; each of its tasks is a YAML file
that says where the rows are and which fields are the prompt, the choices and the target. A headerless JSONL
would still need that YAML, while our header carries what lm-eval has no field for (our metrics, the rule and
seed that built a set) and users already have files with it. So the task files stay as they are (ours or
AdaptLLM's), and this writes, per task, a YAML and the JSONL it points at:

    OUT/<task>.jsonl   {"id", "line", "prompt", "options", "gold"} or {"id", "line", "prompt", "answers"}
    OUT/<task>.yaml    dataset_path json, data_files {test: <absolute path of OUT/<task>.jsonl>}, test_split test,
                       doc_to_text prompt, and options/gold (multiple_choice) or answers (generate_until)
    OUT/lm_eval_export.json   what was exported from where (marks the directory as ours, so a rerun may replace it)

lm-eval resolves `data_files` against its working directory, not the YAML's, so the path written is absolute:
move the directory and export again.

Multiple choice asks lm-eval for the same requests as our scoring.py (context = prompt, continuation = " " + option).
Generation asks for greedy text until "\\n", at most `max_new_tokens` tokens, scored by lm-eval's exact_match
set up to normalize as ours does (SQuAD: punctuation and English articles removed, case and whitespace runs
ignored), best over the answers.
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import List

from megatron_ipt.errors import ConfigError
from megatron_ipt.evaluation.tasks import CHOICE, Task
from megatron_ipt.io.atomic import (
    owned_path,
    publish,
    remove_path,
    remove_stale,
    write_atomic,
    write_json_atomic,
    write_jsonl_atomic,
)
from megatron_ipt.io.inputs import InputError

MANIFEST = "lm_eval_export.json"
TAG = "megatron_ipt"  # every exported task carries it: `--tasks megatron_ipt` runs them all
# A task name becomes a file name in the output directory: no separators, no leading dot.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# lm-eval's exact_match deletes each regex's matches in order, then lower-cases (ignore_case); in this order that
# is our SQuAD normalization (metrics.normalize_answer): punctuation, then articles, then whitespace runs kept as
# one character between words (a run's last character, so only a tab against a space can tell them apart).
EXACT_MATCH_REGEXES = ["[" + re.escape(string.punctuation) + "]", r"(?i)\b(a|an|the)\b", r"^\s+|\s+$|\s(?=\s)"]


def lm_eval_rows(task: Task) -> List[dict]:
    """The rows lm-eval reads: one shape per kind, so its JSON loader infers one schema; `line` points back at
    the task file."""
    rows = []
    for item in task.items:
        row = {"id": item.id, "line": item.line, "prompt": item.prompt}
        if task.kind == CHOICE:
            row.update(options=item.options, gold=item.gold)
        else:
            row["answers"] = item.answers
        rows.append(row)
    return rows


def _yaml(value, indent: int = 0) -> str:
    """A block-style YAML rendering of dicts, lists and scalars; scalars are written as JSON, which YAML reads
    as the same values (no PyYAML needed to write)."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:\n{_yaml(v, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {json.dumps(v, ensure_ascii=False)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for v in value:
            if isinstance(v, dict) and v:
                first, *rest = _yaml(v, indent + 1).split("\n")
                lines.append(f"{pad}- {first.lstrip()}" + "".join("\n" + r for r in rest))
            else:
                lines.append(f"{pad}- {json.dumps(v, ensure_ascii=False)}")
        return "\n".join(lines)
    return pad + json.dumps(value, ensure_ascii=False)


def task_config(task: Task, data_path: str, max_new_tokens: int) -> dict:
    """The lm-eval task config for `task`, its rows at `data_path` (absolute)."""
    config = {
        "task": task.name,
        "tag": [TAG],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_path}},
        "test_split": "test",
        "doc_to_text": "prompt",
    }
    if task.kind == CHOICE:
        config.update(
            output_type="multiple_choice",
            doc_to_choice="options",
            doc_to_target="gold",
            target_delimiter=" ",
            metric_list=[
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        )
    else:
        config.update(
            output_type="generate_until",
            doc_to_target="answers",
            generation_kwargs={"until": ["\n"], "max_gen_toks": max_new_tokens, "do_sample": False},
            metric_list=[
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": True,
                    "regexes_to_ignore": EXACT_MATCH_REGEXES,
                }
            ],
        )
    config["metadata"] = {"version": 1.0, "source": os.path.abspath(task.path), "megatron_ipt_metrics": task.metrics}
    return config


def _check_output_dir(output_dir: str) -> None:
    """The output directory may be absent, empty, or an earlier export (its manifest present): never a directory
    of other files, which replacing it would delete."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InputError(output_dir, None, "--output-dir exists and is not a directory")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not os.path.isfile(os.path.join(output_dir, MANIFEST)):
        raise InputError(
            output_dir,
            None,
            f"--output-dir is not empty and holds no {MANIFEST} (not an earlier export): "
            "choose a new or empty directory",
        )


def export_tasks(tasks: List[Task], output_dir: str, max_new_tokens: int) -> List[str]:
    """Write the tasks' lm-eval YAML + JSONL into `output_dir`, replacing an earlier export there as a whole:
    everything is written to a temporary directory next to it first, then published (io.atomic). Returns the task
    names."""
    for task in tasks:
        if not _NAME.fullmatch(task.name):
            raise InputError(
                task.path,
                None,
                f"task name {task.name!r} cannot name files in --output-dir "
                "(letters, digits, '_', '-', '.'; not starting with '.' or '-')",
            )
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    final = os.path.abspath(output_dir)
    _check_output_dir(final)
    # The export is written whole into this process's temporary directory, then published over the earlier one
    # (io.atomic: a killed export leaves the earlier export or the complete new one, and its leftovers are
    # cleared by the next run that writes next to it).
    remove_stale(os.path.dirname(final))
    tmp = owned_path(final)
    os.makedirs(tmp)
    try:
        for task in tasks:
            write_jsonl_atomic(os.path.join(tmp, f"{task.name}.jsonl"), lm_eval_rows(task))
            config = task_config(task, os.path.join(final, f"{task.name}.jsonl"), max_new_tokens)
            header = f"# lm-evaluation-harness task exported from {os.path.abspath(task.path)}\n"
            write_atomic(os.path.join(tmp, f"{task.name}.yaml"), header + _yaml(config) + "\n")
        manifest = {
            "tool": "tools/evaluate.py export-lm-eval",
            "max_new_tokens": max_new_tokens,
            "tasks": {
                t.name: {"source": os.path.abspath(t.path), "kind": t.kind, "items": len(t.items)} for t in tasks
            },
        }
        write_json_atomic(os.path.join(tmp, MANIFEST), manifest)
    except BaseException:
        remove_path(tmp)
        raise
    publish([(tmp, final)])
    return [t.name for t in tasks]
