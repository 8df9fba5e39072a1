"""Scoring an instruction synthesizer on held-out tuning rows (``{"context", "QA_list": [{"Q", "A"}], ...}``), with
the synthesis engines (hf, vllm, openai) and the synthesis parser, as the paper judges its synthesizer (Cheng et al.
2024, section 2; reference §4.3): format and diversity of what it writes, and how well it answers.

For each row, in two settings:
- zero-shot: the prompt is the row's context alone (``cook_context``), as in synthesis round 0;
- few-shot: one demonstration first, another held-out row in the wire format (``cook_example``: context, pairs,
  ``</s>``), as a round-2 prompt carries one: the previous row of the same source dataset (``rc_name``, else
  ``QA_type``) in the file (the group's first row takes the group's last), or the previous row for a row alone in
  its group.

Measured:
- synthesis: each prompt's greedy generation goes through ``parse_pred`` (the parser synthesis uses): format
  validity = % of generations with at least one valid pair; pairs per text; the pair-type mix (``pair_type``:
  free-form, options, CoT) of the parsed pairs;
- response accuracy: for each gold pair, the prompt plus ``<QUE> {gold question} <ANS>`` is continued greedily; the
  answer is the text before the first ``</END>`` (or ``</s>``), scored against the gold answer by exact match and
  token F1 (SQuAD normalization, megatron_ipt/metrics.py, as evaluation scores generation tasks).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Dict, List, Sequence

from megatron_ipt.formats.wire import ANS, END, EOS, QUE, cook_context, cook_example, pair_type, parse_pred
from megatron_ipt.metrics import exact_match, token_f1

SETTINGS = ("zero-shot", "few-shot")
PAIR_TYPES = ("free-form", "options", "cot")


def _group(entry) -> str:
    return str(entry.carried.get("rc_name") or entry.carried.get("QA_type") or "")


def demonstrations(rows) -> List[int]:
    """For each row, the index of its demonstration row: the previous row of its group, else the previous row."""
    last_of_group: Dict[str, int] = {}
    first_of_group: Dict[str, int] = {}
    for i, row in enumerate(rows):
        first_of_group.setdefault(_group(row), i)
    demos = []
    for i, row in enumerate(rows):
        group = _group(row)
        if group in last_of_group:
            demos.append(last_of_group[group])
        else:  # the group's first row: its group's last row (wrapping), or the previous row when it is alone
            later = [j for j in range(len(rows) - 1, i, -1) if _group(rows[j]) == group]
            demos.append(later[0] if later else (i - 1) % len(rows))
        last_of_group[group] = i
    return demos


def prompts(rows, setting: str) -> List[str]:
    """The synthesis prompt of each row in `setting` (zero-shot or few-shot)."""
    if setting == "zero-shot":
        return [cook_context(row.context) for row in rows]
    demos = demonstrations(rows)
    return [cook_example(rows[d].context, rows[d].qa_list) + cook_context(row.context) for row, d in zip(rows, demos)]


def answer_of(generation) -> str:
    """The answer a continuation of ``... <ANS>`` gives: up to the first ``</END>`` (or ``</s>``)."""
    text = generation or ""
    for stop in (END, EOS):
        text = text.split(stop, 1)[0]
    return text.strip()


def score_synthesis(generations: Sequence) -> dict:
    pairs = [parse_pred(g or "", dedup=True) for g in generations]
    kinds = Counter(pair_type(p) for ps in pairs for p in ps)
    total = sum(kinds.values())
    return {
        "texts": len(generations),
        "failed_generations": sum(1 for g in generations if g is None),  # the engine did not answer
        "format_validity": 100.0 * sum(1 for ps in pairs if ps) / max(len(pairs), 1),
        "pairs_per_text": total / max(len(pairs), 1),
        "pair_types": {k: 100.0 * kinds[k] / total if total else 0.0 for k in PAIR_TYPES},
    }


def score_answers(golds: Sequence[str], generations: Sequence) -> dict:
    answers = [answer_of(g) for g in generations]
    if not golds:
        return {"questions": 0, "exact_match": 0.0, "token_f1": 0.0}
    return {
        "questions": len(golds),
        "exact_match": exact_match([[g] for g in golds], answers),
        "token_f1": token_f1([[g] for g in golds], answers),
    }


def judge(
    rows, make_engine: Callable, max_new_tokens: int, answer_max_new_tokens: int, max_questions_per_row=0, log=print
) -> dict:
    """Scores of one synthesizer. `make_engine(max_new_tokens)` builds its engine (tools/judge_synthesizer.py: any of
    hf, vllm, openai); one engine writes the pairs (room for a whole set), then another answers the gold questions
    (room for one answer), one after the other so that two vLLM engines never share a GPU. Returns {setting:
    scores, 'examples': the first generations of each setting}."""
    out, examples, golds, questions = {}, {}, {}, {}
    engine = make_engine(max_new_tokens)
    try:
        for setting in SETTINGS:
            start = time.perf_counter()
            synthesis_prompts = prompts(rows, setting)
            generations = engine.generate(synthesis_prompts)
            out[setting] = score_synthesis(generations)
            out[setting]["seconds"] = time.perf_counter() - start
            examples[setting] = [
                {"context": row.context[:300], "generation": gen, "pairs": parse_pred(gen or "", dedup=True)}
                for row, gen in list(zip(rows, generations))[:3]
            ]
            questions[setting], golds[setting] = [], []
            for prompt, row in zip(synthesis_prompts, rows):
                for pair in row.qa_list[:max_questions_per_row] if max_questions_per_row else row.qa_list:
                    questions[setting].append(f"{prompt}{QUE} {pair['Q']} {ANS}")
                    golds[setting].append(pair["A"])
    finally:
        engine.close()
    engine = make_engine(answer_max_new_tokens)
    try:
        for setting in SETTINGS:
            start = time.perf_counter()
            answers = engine.generate(questions[setting]) if questions[setting] else []
            out[setting].update(score_answers(golds[setting], answers))
            out[setting]["seconds"] += time.perf_counter() - start
            examples[setting + " answers"] = [
                {"question": q.rsplit(QUE, 1)[1], "gold": g, "answer": answer_of(a)}
                for q, g, a in list(zip(questions[setting], golds[setting], answers))[:3]
            ]
            s = out[setting]
            log(
                f"  {setting}: {s['format_validity']:.1f}% of texts with a valid pair, {s['pairs_per_text']:.2f} "
                f"pairs/text, answer F1 {s['token_f1']:.1f} / EM {s['exact_match']:.1f} ({s['seconds']:.0f} s)"
            )
    finally:
        engine.close()
    out["examples"] = examples
    return out


def gold_profile(rows) -> dict:
    """The held-out rows' own pairs per text and pair-type mix: what a perfect imitation would give."""
    kinds = Counter(pair_type(p) for row in rows for p in row.qa_list)
    total = sum(kinds.values())
    return {
        "texts": len(rows),
        "pairs_per_text": total / max(len(rows), 1),
        "pair_types": {k: 100.0 * kinds[k] / total if total else 0.0 for k in PAIR_TYPES},
    }


ROWS = (
    ("format validity (% texts with >= 1 valid pair)", lambda s: f"{s['format_validity']:.1f}"),
    ("pairs per text", lambda s: f"{s['pairs_per_text']:.2f}"),
    ("pair types free-form/options/CoT (%)", lambda s: "/".join(f"{s['pair_types'][k]:.0f}" for k in PAIR_TYPES)),
    ("response exact match", lambda s: f"{s['exact_match']:.1f}"),
    ("response token F1", lambda s: f"{s['token_f1']:.1f}"),
)


def format_table(results: Dict[str, dict], gold: dict) -> str:
    """Models side by side, one block per setting; the gold rows' profile in the last column."""
    names = list(results)
    width = max(12, *(len(n) for n in names))
    lines = []
    for setting in SETTINGS:
        header = f"{setting:<48}" + "".join(f"{n:>{width + 2}}" for n in names) + f"{'held-out gold':>{width + 2}}"
        lines += [header, "-" * len(header)]
        for label, value in ROWS:
            gold_cell = value(gold) if label.startswith(("pairs", "pair types")) else ""
            cells = "".join(f"{value(results[n][setting]):>{width + 2}}" for n in names)
            lines.append(f"{label:<48}{cells}{gold_cell:>{width + 2}}")
        lines.append("")
    return "\n".join(lines).rstrip()
