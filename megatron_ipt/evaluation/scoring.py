"""Score tasks with a LanguageModel, then write the outputs: a console table, a JSON report (atomic), per-item
predictions (optional) and TensorBoard scalars `eval/<task>/<metric>` at the checkpoint's iteration."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Callable, List, Optional

from megatron_ipt.errors import OutputError
from megatron_ipt.evaluation import metrics
from megatron_ipt.evaluation.held_out import NAME as HELD_OUT
from megatron_ipt.evaluation.held_out import HeldOutText, score_held_out
from megatron_ipt.evaluation.lm import LanguageModel
from megatron_ipt.evaluation.tasks import CHOICE, Task
from megatron_ipt.io.atomic import write_atomic
from megatron_ipt.io.inputs import InputError

MAX_NEW_TOKENS = 100  # the AdaptLLM harness's generation limit


def _fit(start: List[int], prompt: List[int], room: int):
    """start + the last tokens of prompt that fit in `room` tokens (prompts are cut on the left, as the harness
    does); returns (ids, whether the prompt was cut)."""
    keep = min(len(prompt), max(0, room - len(start)))
    return start + prompt[len(prompt) - keep :], keep < len(prompt)


def _continuation_requests(task: Task, lm: LanguageModel, texts: List[List[str]]):
    """Requests scoring each of `texts[i]` as the continuation " " + text of item i's prompt, tokenized together
    with the prompt (the harness's way: the text's tokens are the tail of the joint tokenization), the prompt cut
    on the left to fit --max-length. Per item: a (context, continuation) request per text, or why that text
    cannot be scored (a string); and the number of items whose prompt was cut."""
    prompts = lm.encode_batch([item.prompt for item in task.items])
    joined = lm.encode_batch([item.prompt + " " + text for item, many in zip(task.items, texts) for text in many])
    per_item, truncated, k = [], 0, 0
    for item, prompt, many in zip(task.items, prompts, texts):
        requests, cut_any = [], False
        for _ in many:
            full = joined[k]
            k += 1
            continuation = full[len(prompt) :]
            room = lm.max_length - len(continuation)
            if not continuation:
                requests.append("adds no tokens after the prompt")
            elif room < len(lm.start_ids) + 1:
                requests.append(
                    f"is {len(continuation)} tokens, too long for --max-length {lm.max_length} (the model's context)"
                )
            else:
                context, cut = _fit(lm.start_ids, full[: len(prompt)], room)
                if len(context) == 0:
                    raise InputError(task.path, item.line, "empty prompt and no --start-token: nothing to condition on")
                cut_any |= cut
                requests.append((context, continuation))
        per_item.append(requests)
        truncated += cut_any
    return per_item, truncated


def _mean_nlls(lm: LanguageModel, requests: List[tuple]) -> List[float]:
    return [sum(n) / len(n) for n in lm.continuation_nlls(requests)]


def score_multiple_choice(task: Task, lm: LanguageModel):
    """Each option is the continuation " " + option; its score is the mean NLL of its tokens; the prediction is
    the option with the lowest mean NLL. Per item also: accuracy (0/100), gold_loglik and gold_margin (nats)."""
    per_item, truncated = _continuation_requests(task, lm, [item.options for item in task.items])
    requests = []
    for item, options in zip(task.items, per_item):
        for index, request in enumerate(options):
            if isinstance(request, str):
                raise InputError(task.path, item.line, f"option {index} {request}")
            requests.append(request)
    nlls = _mean_nlls(lm, requests)
    predictions, k = [], 0
    for item in task.items:
        means = nlls[k : k + len(item.options)]
        k += len(item.options)
        pred = min(range(len(means)), key=means.__getitem__)
        predictions.append(
            {
                "line": item.line,
                "id": item.id,
                "gold": item.gold,
                "pred": pred,
                "option_nll": means,
                "accuracy": 100.0 if pred == item.gold else 0.0,
                **metrics.option_loglik_scores(means, item.gold),
            }
        )
    golds = [p["gold"] for p in predictions]
    preds = [p["pred"] for p in predictions]
    scores = metrics.choice_scores(task.metrics, golds, preds, [item.group for item in task.items])
    for name in ("gold_loglik", "gold_margin"):
        scores[name] = metrics.mean([p[name] for p in predictions])
    return scores, predictions, truncated


def score_generation(task: Task, lm: LanguageModel, max_new_tokens: int):
    """Greedy continuation of the prompt up to `max_new_tokens` (and the model's max length), cut at the first
    newline and stripped; compared with the gold answers. Per item also gold_nll: the gold answer's mean NLL per
    token as the continuation " " + answer (scored as a multiple-choice option is; the lowest over the answers,
    those too long for --max-length left out)."""
    per_item, _ = _continuation_requests(task, lm, [item.answers for item in task.items])
    gold_requests, owner = [], []
    for i, (item, answers) in enumerate(zip(task.items, per_item)):
        fitting = [r for r in answers if not isinstance(r, str)]
        if not fitting:
            raise InputError(task.path, item.line, f"no answer can be scored: answer 0 {answers[0]}")
        gold_requests += fitting
        owner += [i] * len(fitting)
    room = lm.max_length - min(max_new_tokens, lm.max_length // 2)
    prompts, truncated = [], 0
    for item, ids in zip(task.items, lm.encode_batch([item.prompt for item in task.items])):
        context, cut = _fit(lm.start_ids, ids, room)
        if not context:
            raise InputError(task.path, item.line, "empty prompt and no --start-token: nothing to condition on")
        prompts.append(context)
        truncated += cut
    outputs = lm.greedy(prompts, max_new_tokens)
    gold_nll = [float("inf")] * len(task.items)
    for i, nll in zip(owner, _mean_nlls(lm, gold_requests)):
        gold_nll[i] = min(gold_nll[i], nll)
    predictions = []
    for item, output, nll in zip(task.items, outputs, gold_nll):
        text = lm.decode(output).split("\n")[0].strip()
        predictions.append(
            {
                "line": item.line,
                "id": item.id,
                "answers": item.answers,
                "pred": text,
                **metrics.generation_item_scores(task.metrics, item.answers, text),
                "gold_nll": nll,
            }
        )
    scores = {name: metrics.mean([p[name] for p in predictions]) for name in task.metrics + ["gold_nll"]}
    return scores, predictions, truncated


def evaluate(
    tasks: List[Task],
    lm: LanguageModel,
    max_new_tokens: int = MAX_NEW_TOKENS,
    log=print,
    held_out: Optional[HeldOutText] = None,
) -> dict:
    """Score every task, then the held-out text's perplexity (if given: the task `held_out_text`); returns the
    report (results per task, and the settings that produced them) with the per-item predictions under
    "_predictions" (written to their own files, not into the report)."""
    results, predictions = {}, {}
    for task in tasks:
        began = time.perf_counter()
        if task.kind == CHOICE:
            scores, preds, truncated = score_multiple_choice(task, lm)
        else:
            scores, preds, truncated = score_generation(task, lm, max_new_tokens)
        seconds = time.perf_counter() - began
        results[task.name] = {
            "kind": task.kind,
            "path": task.path,
            "items": len(task.items),
            "metrics": scores,
            "truncated_prompts": truncated,
            "skipped_lines": dict(task.skipped),
            "seconds": round(seconds, 3),
        }
        if task.kind == CHOICE:
            results[task.name]["chance_accuracy"] = (
                100.0 * sum(1 / len(i.options) for i in task.items) / len(task.items)
            )
        predictions[task.name] = preds
        if lm.is_writer:
            log(f"{task.name}: {len(task.items)} items in {seconds:.1f} s | {_scores_line(scores)}")
    if held_out is not None:
        began = time.perf_counter()
        result, predictions[HELD_OUT] = score_held_out(held_out, lm)
        result["seconds"] = round(time.perf_counter() - began, 3)
        results[HELD_OUT] = result
        if lm.is_writer:
            log(
                f"{HELD_OUT}: {result['items']} documents, {result['tokens']} tokens in {result['seconds']:.1f} s | "
                + _scores_line(result["metrics"])
            )
    return {
        "model": lm.name,
        "backend": lm.backend,
        "layout": lm.layout,
        "iteration": lm.iteration,
        "max_length": lm.max_length,
        "start_ids": lm.start_ids,
        "max_new_tokens": max_new_tokens,
        "tasks": results,
        "_predictions": predictions,
    }


def _score(metric: str, value: float) -> str:
    """Percentages with 2 decimals; nats (differences of a few hundredths matter) with 4."""
    return f"{value:.4f}" if metric in metrics.NATS_METRICS else f"{value:.2f}"


def _scores_line(scores: dict) -> str:
    return " | ".join(f"{k} {_score(k, v)}" for k, v in scores.items())


def format_table(report: dict) -> str:
    rows = [("task", "kind", "items", "metric", "score")]
    for name, result in report["tasks"].items():
        for i, (metric, value) in enumerate(result["metrics"].items()):
            rows.append(
                (
                    name if i == 0 else "",
                    result["kind"] if i == 0 else "",
                    str(result["items"]) if i == 0 else "",
                    metric,
                    _score(metric, value),
                )
            )
        if "chance_accuracy" in result:
            rows.append(("", "", "", "(chance accuracy)", f"{result['chance_accuracy']:.2f}"))
        if "tokens" in result:  # held-out text: items are documents; the perplexity is per predicted token
            rows.append(("", "", "", "(tokens)", str(result["tokens"])))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = [
        "  ".join(
            cell.rjust(w) if c >= 2 and c != 3 else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _probe_directory(flag: str, path: str, directory: str) -> None:
    """Create `directory` if needed and a file in it (what an atomic write does), so an unwritable output `path`
    fails before the model loads, not after the whole evaluation."""
    existing = directory
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"{flag} {path}: cannot write there: {existing} is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".evaluate-probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot write there: {e.strerror or e}") from None


def check_outputs(
    names: List[str], output: Optional[str], predictions_dir: Optional[str], tensorboard_dir: Optional[str]
) -> None:
    """Every output writable (or its directory creatable), checked before any work; `names`: the tasks' names
    (their prediction files). Raises OutputError."""
    if output:
        if os.path.isdir(output):
            raise OutputError(f"--output {output}: is a directory (give the JSON report's file path)")
        _probe_directory("--output", output, os.path.dirname(os.path.abspath(output)))
    if predictions_dir:
        if os.path.exists(predictions_dir) and not os.path.isdir(predictions_dir):
            raise OutputError(f"--predictions-dir {predictions_dir}: exists and is not a directory")
        _probe_directory("--predictions-dir", predictions_dir, os.path.abspath(predictions_dir))
        for name in names:
            path = os.path.join(predictions_dir, f"{name}.jsonl")
            if os.path.isdir(path):
                raise OutputError(f"--predictions-dir: {path} is a directory")
    if tensorboard_dir:
        _probe_directory("--tensorboard-dir", tensorboard_dir, os.path.abspath(tensorboard_dir))


def _write(flag: str, path: str, content: str) -> None:
    try:
        write_atomic(path, content)
    except OSError as e:  # e.g. ENOSPC: write_atomic leaves the earlier file (if any), never a partial one
        raise OutputError(f"{flag} {path}: could not write: {e.strerror or e}") from None


def write_outputs(
    report: dict,
    output: Optional[str],
    predictions_dir: Optional[str],
    tensorboard_dir: Optional[str],
    step: Optional[int],
) -> None:
    """Predictions, TensorBoard scalars, then the report last: a report on disk means every output was written.
    Raises OutputError naming the path that could not be written."""
    predictions = report.pop("_predictions")
    if predictions_dir:
        for name, rows in predictions.items():
            _write(
                "--predictions-dir",
                os.path.join(predictions_dir, f"{name}.jsonl"),
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
            )
    if tensorboard_dir:
        from torch.utils.tensorboard import SummaryWriter

        try:
            writer = SummaryWriter(log_dir=tensorboard_dir)
            for name, result in report["tasks"].items():
                for metric, value in result["metrics"].items():
                    writer.add_scalar(f"eval/{name}/{metric}", value, step or 0)
            writer.flush()
            writer.close()
        except OSError as e:
            raise OutputError(f"--tensorboard-dir {tensorboard_dir}: could not write: {e.strerror or e}") from None
    if output:
        _write("--output", output, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def run(
    open_model: Callable[[], LanguageModel],
    task_paths: List[str],
    *,
    skip_bad_lines: bool = False,
    limit: Optional[int] = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    output: Optional[str] = None,
    predictions_dir: Optional[str] = None,
    tensorboard_dir: Optional[str] = None,
    step: Optional[int] = None,
    held_out_text: Optional[str] = None,
    held_out_text_key: str = "text",
) -> int:
    """tools/evaluate.py: load the tasks and the held-out text (so a bad file fails before a model loads), open the
    model, score, write the outputs. `step`: the TensorBoard step (default: the checkpoint's iteration, or 0)."""
    from megatron_ipt.evaluation.held_out import load_held_out
    from megatron_ipt.evaluation.tasks import load_tasks

    rank0 = int(os.environ.get("RANK", 0)) == 0
    if not task_paths and not held_out_text:
        if rank0:
            print("error: nothing to evaluate: give --tasks, --held-out-text or both", file=sys.stderr, flush=True)
        return 1
    try:
        tasks = load_tasks(task_paths, skip_bad_lines, limit) if task_paths else []
        held_out = None
        if held_out_text:
            held_out = load_held_out(held_out_text, held_out_text_key, skip_bad_lines)
            for task in tasks:
                if task.name == HELD_OUT:
                    raise InputError(
                        task.path, None, f"task name {HELD_OUT!r} is the held-out text's (--held-out-text)"
                    )
        names = [task.name for task in tasks] + ([HELD_OUT] if held_out else [])
        if rank0:  # the rank that writes (other nodes may not even see these paths); torchrun stops the rest
            check_outputs(names, output, predictions_dir, tensorboard_dir)
    except (InputError, OutputError) as e:
        if rank0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    lm = open_model()
    try:
        if lm.is_writer:
            print(
                f"model {lm.name} (iteration {lm.iteration}) | {len(tasks)} tasks"
                + (f" + held-out text ({len(held_out.documents)} documents)" if held_out else "")
                + f" | max length {lm.max_length} | "
                f"start tokens {lm.start_ids}",
                flush=True,
            )
            for task in tasks:
                if task.skipped:
                    print(
                        f"{task.path}: skipped {sum(task.skipped.values())} bad lines: {dict(task.skipped)}; "
                        f"first: {task.skipped_examples[0]}",
                        flush=True,
                    )
            if held_out and (held_out.skipped or held_out.empty):
                bad = f"; first bad line: {held_out.skipped_examples[0]}" if held_out.skipped else ""
                print(
                    f"{held_out.spec}: skipped {held_out.empty} empty documents and "
                    f"{sum(held_out.skipped.values())} bad lines {dict(held_out.skipped)}{bad}",
                    flush=True,
                )
        try:
            report = evaluate(tasks, lm, max_new_tokens, log=lambda m: print(m, flush=True), held_out=held_out)
        except InputError as e:
            if lm.is_writer:
                print(f"error: {e}", file=sys.stderr, flush=True)
            return 1
        if lm.is_writer:
            step = step if step is not None else (lm.iteration or 0)
            try:
                write_outputs(report, output, predictions_dir, tensorboard_dir, step)
            except OutputError as e:
                print(format_table(report), flush=True)  # the scores are not lost with the file
                print(f"error: {e}", file=sys.stderr, flush=True)
                return 1
            print(format_table(report), flush=True)
            for what, where in (
                ("report", output),
                ("predictions", predictions_dir),
                ("TensorBoard scalars eval/<task>/<metric> at step " + str(step), tensorboard_dir),
            ):
                if where:
                    print(f"{what}: {where}", flush=True)
    finally:
        lm.close()
    return 0
