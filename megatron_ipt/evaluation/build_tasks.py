"""Evaluation sets built from held-out text by fixed rules (no benchmark can be downloaded here).

Every document is split into sentences (megatron_ipt.text.sentences: at . ! ? before a capital,
sentences of 5+ words). Its passage is the first run of consecutive sentences of at most `max_sentence_words`
words each (sentences become options and answers, which must fit a model's context), extended up to
`max_passage_words` words; a document without two such sentences in a row is skipped and counted. From each
passage, with one seeded RNG per task:

- `rc_sentence_choice` (multiple choice): "Which of the following sentences appears in the passage above?";
  the gold option is a sentence of the passage, the distractors are sentences of other documents (never one
  that also occurs in this document). Reading the passage solves it; a model that copies from its context
  scores far above chance.
- `rc_next_sentence_choice` (multiple choice): the passage minus its last sentence, "Which sentence comes
  next in the passage above?"; the gold is the withheld sentence, the distractors as above. It needs the
  passage's topic and flow, not copying.
- `rc_sentence_completion` (generation): "Complete this sentence from the passage above: "<first half> ...""
  then "Answer: <first half>"; the gold answer is the sentence's second half (exact match, token F1).

Options are shuffled (the gold's position is uniform, so chance accuracy is 1/options). The same input and
seed always give the same files. Each file starts with a header naming the rule, the source and the seed.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Dict, List

from megatron_ipt.errors import ConfigError
from megatron_ipt.evaluation.tasks import write_task
from megatron_ipt.formats.records import TaskItem
from megatron_ipt.io.atomic import owned_path, publish, remove_path
from megatron_ipt.io.inputs import expand_inputs
from megatron_ipt.io.jsonl import BadLines, key_values, read_jsonl
from megatron_ipt.text import sentences

TASKS = ("rc_sentence_choice", "rc_next_sentence_choice", "rc_sentence_completion")


def read_documents(spec: str, text_key: str = "text") -> List[str]:
    """Texts of a JSONL file/glob/directory; a bad line stops with its file and line."""
    texts, bad = [], BadLines()
    for path in expand_inputs(spec):
        for _, (value,) in read_jsonl(path, bad, lambda record: key_values(record, [text_key])):
            texts.append(" ".join(value) if isinstance(value, list) else value)
    return texts


def _passages(text: str, max_words: int, max_sentence_words: int, limit: int = 1) -> List[List[str]]:
    """Up to `limit` passages of the text, in order and not overlapping: each a run of at least two consecutive
    sentences of at most `max_sentence_words` words each (sentences become options and answers, which must fit a
    model's context), extended up to `max_words` words."""
    found: List[List[str]] = []
    run: List[str] = []
    for sentence in sentences(text):
        n = len(sentence.split())
        if n > max_sentence_words:
            if len(run) >= 2:
                found.append(run)
            run = []
        elif run and sum(len(s.split()) for s in run) + n > max_words:
            if len(run) >= 2:
                found.append(run)
            run = [sentence]  # one sentence and this one do not fit: start again here
        else:
            run.append(sentence)
        if len(found) == limit:
            return found
    if len(run) >= 2:
        found.append(run)
    return found[:limit]


def _options(rng: random.Random, gold: str, pool: List[tuple], doc: int, doc_text: str, n: int):
    """Shuffled options: the gold and n-1 distinct sentences of other documents that do not occur in this one
    (documents can share sentences); returns (options, gold index)."""
    distractors: List[str] = []
    for _ in range(100 * n):
        if len(distractors) == n - 1:
            break
        other_doc, sentence = pool[rng.randrange(len(pool))]
        if other_doc != doc and sentence not in distractors and sentence not in doc_text:
            distractors.append(sentence)
    if len(distractors) < n - 1:
        raise ConfigError(f"document {doc}: could not find {n - 1} distinct distractor sentences in other documents")
    options = distractors + [gold]
    rng.shuffle(options)
    return options, options.index(gold)


def build_tasks(
    texts: List[str],
    output_dir: str,
    seed: int = 1234,
    num_options: int = 4,
    max_passage_words: int = 120,
    max_sentence_words: int = 40,
    max_items: int = None,
    source: str = "",
    passages_per_document: int = 1,
) -> Dict[str, object]:
    """Write the three task files into `output_dir`; returns {"items": {task: n}, "skipped_documents": n}.
    `passages_per_document` > 1 makes items from several non-overlapping passages of a long document (more items
    from the same held-out text: narrower intervals in an ablation)."""
    if passages_per_document < 1:
        raise ConfigError(f"--passages-per-document {passages_per_document} must be at least 1")
    passages = [_passages(t, max_passage_words, max_sentence_words, passages_per_document) for t in texts]
    usable = [d for d, p in enumerate(passages) if p]
    pool = [(d, s) for d in usable for passage in passages[d] for s in passage]
    if len({d for d, _ in pool}) < num_options:
        raise ConfigError(
            f"{source or 'input'}: {len(usable)} documents have 2+ sentences; "
            f"{num_options} options need at least {num_options}"
        )
    items: Dict[str, List[TaskItem]] = {name: [] for name in TASKS}
    rngs = {name: random.Random(f"{seed}:{name}") for name in TASKS}
    for d, k in [(doc, k) for doc in usable for k in range(len(passages[doc]))]:
        doc_id = f"doc{d}" if k == 0 else f"doc{d}-p{k}"
        passage = passages[d][k]
        doc_text = " ".join(texts[d].split())
        text = " ".join(passage)

        rng = rngs["rc_sentence_choice"]
        options, gold = _options(rng, passage[rng.randrange(len(passage))], pool, d, doc_text, num_options)
        items["rc_sentence_choice"].append(
            TaskItem(
                f"{text}\n\nQuestion: Which of the following sentences appears in the passage above?\nAnswer:",
                options=options,
                gold=gold,
                id=f"{doc_id}-appears",
            )
        )

        rng = rngs["rc_next_sentence_choice"]
        options, gold = _options(rng, passage[-1], pool, d, doc_text, num_options)
        items["rc_next_sentence_choice"].append(
            TaskItem(
                f"{' '.join(passage[:-1])}\n\nQuestion: Which sentence comes next in the passage above?\nAnswer:",
                options=options,
                gold=gold,
                id=f"{doc_id}-next",
            )
        )

        rng = rngs["rc_sentence_completion"]
        words = passage[rng.randrange(1, len(passage))].split()
        half = len(words) // 2
        items["rc_sentence_completion"].append(
            TaskItem(
                f"{text}\n\nQuestion: Complete this sentence from the passage above: "
                f'"{" ".join(words[:half])} ..."\nAnswer: {" ".join(words[:half])}',
                answers=[" ".join(words[half:])],
                id=f"{doc_id}-complete",
            )
        )
    if max_items:
        items = {name: rows[:max_items] for name, rows in items.items()}
    rules = {
        "rc_sentence_choice": "gold: a sentence of the passage; distractors: sentences of other documents not in this one",
        "rc_next_sentence_choice": "gold: the passage's withheld last sentence; distractors: sentences of other documents not in this one",
        "rc_sentence_completion": "answer: the second half of a passage sentence, given its first half",
    }
    # The three files are written under temporary names and published together: a failed or killed run never
    # leaves a mix of old and new task files (nor a temporary file: the next run removes a killed one's).
    paths = [os.path.join(output_dir, f"{name}.jsonl") for name in TASKS]
    try:
        _write_tasks(paths, items, rules, source, seed, num_options, max_passage_words, max_sentence_words)
    except BaseException:
        for path in paths:
            remove_path(owned_path(path))
        raise
    publish([(owned_path(path), path) for path in paths])
    return {
        "items": Counter({k: len(v) for k, v in items.items()}),
        "skipped_documents": len(texts) - len(usable),
        "documents": len(texts),
    }


def _write_tasks(paths, items, rules, source, seed, num_options, max_passage_words, max_sentence_words):
    for name, path in zip(TASKS, paths):
        kind_metrics = ["exact_match", "token_f1"] if name == "rc_sentence_completion" else ["accuracy"]
        header = {
            "name": name,
            "metrics": kind_metrics,
            "rule": rules[name],
            "source": source,
            "seed": seed,
            "num_options": num_options if name != "rc_sentence_completion" else None,
            "max_passage_words": max_passage_words,
            "max_sentence_words": max_sentence_words,
        }
        write_task(owned_path(path), items[name], header)
