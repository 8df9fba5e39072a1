"""Held-out raw-text perplexity (tools/evaluate.py --held-out-text): does a recipe that trains on instruction-augmented
text cost plain language modelling? Reported as the task `held_out_text` of kind `perplexity`.

Each document is scored as one token stream, laid out as the packer lays a document out in training: the start
tokens (`LanguageModel.start_ids`) then the document's tokens. A stream longer than --max-length is cut into
windows of at most --max-length tokens that share one token: window k starts at position k * (max_length - 1)
and predicts every token in it but its first, so every token of the stream after the first is predicted exactly
once. A window is conditioned on nothing before its own first token (no sliding context): tokens early in a
later window see less context than in training, so long documents read a little pessimistic; the rule is the
same for every model and backend, which is what comparisons need. The NLLs come from the shared
`LanguageModel.continuation_nlls` (context = a window's first token, continuation = the rest), so the HF backend
and ours (any TP/DP) give the same numbers on the same weights.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Tuple

from megatron_ipt.evaluation.lm import LanguageModel, Request
from megatron_ipt.io.inputs import InputError, expand_inputs
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, read_jsonl, string_field

NAME, KIND = "held_out_text", "perplexity"


@dataclass
class HeldOutText:
    spec: str  # what --held-out-text named (a file, glob or directory)
    documents: List[Tuple[str, int, str]]  # (path, line, text), empty texts left out
    empty: int = 0  # documents whose text is empty or only whitespace: nothing to score
    skipped: Counter = field(default_factory=Counter)  # problem kind -> lines skipped (--skip-bad-lines)
    skipped_examples: List[str] = field(default_factory=list)


def load_held_out(spec: str, key: str = "text", skip_bad_lines: bool = False) -> HeldOutText:
    """The documents of a JSONL file/glob/directory, read before any model loads: a line that is not an object
    with a string `key` raises InputError(path, line, problem) (or is counted with `skip_bad_lines`)."""
    bad = BadLines(skip=skip_bad_lines)

    def text_of(record) -> str:
        if not isinstance(record, dict):
            raise LineError("not a JSON object", f"got {json_type(record)}")
        return string_field(record, key)

    documents, empty = [], 0
    for path in expand_inputs(spec):
        for line, text in read_jsonl(path, bad, text_of):
            if text.strip():
                documents.append((path, line, text))
            else:
                empty += 1
    if not documents:
        problem = f"no documents with a non-empty {key!r}"
        raise InputError(spec, None, problem + f" ({empty} empty, {bad.total} bad lines skipped)")
    return HeldOutText(spec, documents, empty, bad.counts, bad.examples)


def windows(stream: List[int], max_length: int) -> List[Request]:
    """(context, continuation) requests covering `stream` in windows of at most `max_length` tokens that share one
    token, so that stream[1:] is predicted exactly once (see the module's docstring)."""
    step = max_length - 1
    return [(stream[i : i + 1], stream[i + 1 : i + max_length]) for i in range(0, len(stream) - 1, step)]


def score_held_out(held: HeldOutText, lm: LanguageModel):
    """Returns (result fields of the report, per-document prediction rows)."""
    if lm.max_length < 2:
        raise InputError(held.spec, None, f"--max-length {lm.max_length}: a window needs 2 tokens to predict one")
    requests, owner = [], []
    for d, tokens in enumerate(lm.encode_batch([text for _, _, text in held.documents])):
        for request in windows(lm.start_ids + tokens, lm.max_length):
            requests.append(request)
            owner.append(d)
    nll_sums, counts = [0.0] * len(held.documents), [0] * len(held.documents)
    for d, nlls in zip(owner, lm.continuation_nlls(requests)):
        nll_sums[d] += sum(nlls)
        counts[d] += len(nlls)
    tokens = sum(counts)
    if tokens == 0:  # one-token documents and no start token: nothing is predicted
        raise InputError(held.spec, None, "no token to predict (each document is a single token; try --start-token)")
    nll_per_token = sum(nll_sums) / tokens
    result = {
        "kind": KIND,
        "path": held.spec,
        "items": len(held.documents),
        "tokens": tokens,
        "windows": len(requests),
        "metrics": {"nll_per_token": nll_per_token, "perplexity": math.exp(nll_per_token)},
        "empty_documents": held.empty,
        "skipped_lines": dict(held.skipped),
    }
    rows = [
        {"path": path, "line": line, "tokens": n, "nll_sum": s}
        for (path, line, _), n, s in zip(held.documents, counts, nll_sums)
    ]
    return result, rows
