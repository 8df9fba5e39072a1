"""The synthesizer's tuning data: the collection's rows -> few-shot packed sequences with a loss mask, as Megatron
`.bin/.idx` (Cheng et al. 2024, arXiv 2406.14491, section 2; reference spec section 2.3-2.4; the authors released
the data, `instruction-pretrain/ft-instruction-synthesizer-collection`, but not this code).

Inputs (``--input``, any mix):
- a dataset folder of the released collection: ``<Dataset>/shard/*.jsonl`` rows and ``<Dataset>/json/{train,valid}.json``
  manifests ``[{"source": "shard/00000.jsonl", "weight": 1.0, ...}]`` (sources relative to the folder). The folder's
  name is the dataset. A folder without ``json/`` uses every ``shard/*.jsonl`` with weight 1 for ``--split train``;
- the collection's root (a directory whose sub-folders are dataset folders): every dataset folder in it;
- plain JSONL files (a file, a glob, or another directory) of the same rows; a row's dataset is its ``rc_name``
  when that is a string, else the file name without its suffixes.
Rows: ``{"context": str, "QA_list": [{"Q": str, "A": str}, ...], "QA_type", "rc_name"}`` (other keys ignored).

Weights: a manifest weight ``w`` uses each row of that source ``floor(w)`` times, plus once more with probability
``w - floor(w)`` (seeded), so 0 leaves the source out and 2.5 repeats it two and a half times on average. (The
dataset card shows weights without defining them; this is our reading of a mixing weight.)

Sampling (the paper's): per dataset at most ``--max-examples-per-dataset`` distinct rows, those with the most pairs
first; ties are broken by a seeded shuffle (``--seed`` and the dataset's name), so the same seed picks the same
rows and no shard is favoured by its position. The cap counts distinct rows; weights then repeat them.

Rendering: ``cook_context(context) + cook_pairs(pairs) + "</s>"`` (megatron_ipt/formats/wire.py, the code synthesis
prompts and demonstrations are built with). Questions and answers are stripped, as the parser strips them, and a row
whose pairs would not come back unchanged through the parser (``parse_pred``: an empty question or answer, or a
wire marker inside one) is a bad row. Options and chain-of-thought strings are the rows' own: the released
collection already writes them in the parser's format.

Tokens: as every synthesis engine tokenizes a prompt (wire.py's BOS rule): nothing added by the tokenizer, and the
literal ``<s>``/``</s>`` become the BOS/EOS ids when the tokenizer spells them so as single tokens (Mistral,
Llama-2: what the released synthesizer's own tokenizer does), else they stay text (e.g. SmolLM2). An example is the
prompt ``cook_context(context)`` (no loss) followed by its pairs and ``</s>`` (loss). It is tokenized as one text
when the prompt's own tokens are a prefix of the whole text's tokens; where a tokenizer merges across that boundary
(byte-level BPE splits the prompt's final ``\\n\\n`` differently when text follows), the prompt and the pairs are
tokenized apart, so the prompt's tokens are exactly those synthesis feeds the model (counted as
``prompt_boundary_split``). The decoded text is the same either way.

Packing (section 2.4): examples of ONE dataset, in a seeded order, go greedily into sequences of at most
``seq_length + 1`` tokens (a training sample is seq_length inputs plus the shifted label), so later examples see
earlier ones of the same task family as demonstrations. A sequence never holds two copies of one row (its answers
would be in view). An example longer than ``seq_length + 1`` is skipped and counted (``too_long``): cutting it would
train the model on pairs whose context was cut away. Sequences of all datasets are then shuffled (seeded).

Outputs: ``{prefix}_text_document.{bin,idx}`` (one packed sequence = one document) and
``{prefix}_loss_mask_document.{bin,idx}`` (uint8, the same document lengths; ``mask[i] = 1`` iff token ``i`` is a
target that carries loss: the pairs from ``<QUE>`` through the final ``</s>``; contexts, ``<s>`` and the
``<CON>`` block 0). Training takes ``labels = tokens[1:]`` and ``loss_mask = mask[1:]``. Then ``{prefix}.tuning.json``,
the summary. Publication: the four files are published in one commit (io.atomic.publish: the old outputs are
moved aside, the new renamed in, mask before text, then the old deleted; a run killed in between is finished by
the next), so a text dataset is never seen without its own mask and the previous outputs stay whole until the new
ones are complete; the summary is written last (an old one is removed first).
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_ipt.errors import ConfigError
from megatron_ipt.flags import flag
from megatron_ipt.formats.indexed import (
    DTYPE_NAMES,
    MASK_KEY,
    TEXT_KEY,
    IndexedDatasetWriter,
    document_prefix,
    finalize_together,
    optimal_dtype_code,
)
from megatron_ipt.formats.records import Entry
from megatron_ipt.formats.wire import ANS, BOS, END, EOS, QUE, cook_context, cook_pairs, pair_type, parse_pred
from megatron_ipt.io.atomic import write_json_atomic
from megatron_ipt.io.inputs import JSONL_SUFFIXES, InputError, expand_inputs
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, read_jsonl
from megatron_ipt.tokenizers import Tokenizer, TokenizerSpec

DEFAULT_SEQ_LENGTH = 4096  # the released synthesizer's context (max_model_len 4096)
DEFAULT_MAX_EXAMPLES = 10_000  # the paper: up to 10K examples per dataset
SPLITS = ("train", "valid")
MASK_DTYPE_CODE = 1  # uint8
WIRE_MARKERS = (QUE, ANS, END, BOS, EOS)  # inside a question or answer, these would break the parser or the EOS
ENCODE_BATCH = 512
_SUFFIXES = re.compile(r"(\.(jsonl|json|ndjson))?(\.(gz|zst|zstd))?$")


# The argument groups of tools/build_tuning_data.py's --help (the tool makes them in this order)
INPUT = "input data"
DECONTAMINATION = "decontamination (the corpus stage's n-gram check)"
TOKENIZER = (
    "tokenizer (the synthesizer's: the model's own tokenizer.json directory or SentencePiece model; "
    "nothing is added to the wire text, as the synthesis engines tokenize it)"
)
PACKING = "packing"
OUTPUT = "output data"


@dataclass(kw_only=True)
class TuningDataConfig:
    """One build; each field but the tokenizer is a flag of tools/build_tuning_data.py."""

    inputs: Sequence[str] = flag(
        help="collection dataset folders (<Dataset>/shard/*.jsonl + json/{train,valid}.json), the collection's root, "
        "or JSONL files of rows (files, globs, directories)",
        flags=["--input"],
        metavar="INPUT",
        required=True,
        field_required=True,
        group=INPUT,
    )
    split: str = flag(
        "train", help="which manifest of each dataset folder to read (default train)", choices=SPLITS, group=INPUT
    )
    max_examples_per_dataset: int = flag(  # 0: no cap
        DEFAULT_MAX_EXAMPLES,
        help="at most this many distinct rows per dataset, those with the most pairs first, ties in a seeded order "
        f"(the paper: 10K; default {DEFAULT_MAX_EXAMPLES}; 0: all)",
        group=INPUT,
    )
    skip_bad_lines: bool = flag(
        False,
        help="skip and count bad rows (malformed JSON, a missing or mistyped field, a pair the synthesizer's parser "
        "would not give back) instead of stopping with an error",
        group=INPUT,
    )
    eval_sets: Sequence[str] = flag(
        (),
        help="evaluation sets: JSONL (one example per line) or plain text (one per line); files, globs or dirs. "
        "Pairs that overlap are dropped, and rows whose context overlaps",
        flags=["--decontaminate"],
        metavar="EVAL_FILES",
        group=DECONTAMINATION,
    )
    eval_keys: Optional[Sequence[str]] = flag(
        None, help="JSONL keys holding an example's text (default: every string in it)", group=DECONTAMINATION
    )
    ngram: int = flag(
        13,  # the corpus stage's default (corpus/decontam.py)
        help="overlap length in normalized words (default 13)",
        flags=["--ngram-size"],
        metavar="NGRAM_SIZE",
        group=DECONTAMINATION,
    )
    tokenizer: TokenizerSpec
    seq_length: int = flag(
        DEFAULT_SEQ_LENGTH,
        help=f"training sequence length; a packed sequence holds up to seq-length + 1 tokens (default {DEFAULT_SEQ_LENGTH}, "
        "the released synthesizer's context)",
        group=PACKING,
    )
    seed: int = flag(1234, help="sampling ties, weights, packing order (default 1234)", group=PACKING)
    output_prefix: str = flag(
        help="writes {prefix}_text_document.{bin,idx}, {prefix}_loss_mask_document.{bin,idx} and {prefix}.tuning.json",
        required=True,
        field_required=True,
        group=OUTPUT,
    )

    def check(self):
        if self.seq_length < 1:
            raise ConfigError(f"--seq-length must be >= 1, got {self.seq_length}")
        if self.max_examples_per_dataset < 0:
            raise ConfigError(
                f"--max-examples-per-dataset must be >= 0 (0: no cap), got {self.max_examples_per_dataset}"
            )
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    def outputs(self) -> Dict[str, str]:
        p = self.output_prefix
        return {
            "text": document_prefix(p, TEXT_KEY),
            "loss_mask": document_prefix(p, MASK_KEY),
            "summary": f"{p}.tuning.json",
        }


# -- finding the sources ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One JSONL file of rows. `dataset` None: each row's rc_name (or the file's name) decides."""

    path: str
    dataset: Optional[str] = None
    weight: float = 1.0
    stand_in: bool = False


def is_dataset_folder(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "shard"))


def dataset_sources(folder: str, split: str) -> List[Source]:
    """The sources of one collection folder for `split`, from its json/{split}.json manifest."""
    name = os.path.basename(os.path.normpath(folder))
    manifest = os.path.join(folder, "json", f"{split}.json")
    if not os.path.isfile(manifest):
        if os.path.isdir(os.path.join(folder, "json")):
            raise InputError(
                folder, None, f"dataset folder has json/ but no json/{split}.json manifest (--split {split})"
            )
        if split != "train":
            raise InputError(folder, None, f"dataset folder has no json/{split}.json manifest (--split {split})")
        return [Source(p, name) for p in expand_inputs(os.path.join(folder, "shard"), JSONL_SUFFIXES, "shard files")]
    try:
        with open(manifest, encoding="utf-8") as f:
            items = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(manifest, None, f"cannot read the manifest as JSON ({e})") from None
    if not isinstance(items, list):
        raise InputError(manifest, None, f'a manifest is a JSON list of {{"source", "weight"}}, got {json_type(items)}')
    sources = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("source"), str):
            raise InputError(manifest, None, f"item {i}: needs a string 'source' (a shard path relative to {folder})")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 <= weight < math.inf):
            raise InputError(manifest, None, f"item {i}: 'weight' must be a number >= 0, got {weight!r}")
        path = os.path.normpath(os.path.join(folder, item["source"]))
        if not os.path.isfile(path):
            raise InputError(manifest, None, f"item {i}: source {item['source']!r}: no such file ({path})")
        sources.append(Source(path, name, float(weight), bool(item.get("stand_in", False))))
    return sources


def discover_sources(specs: Sequence[str], split: str) -> List[Source]:
    """Every source the --input specs name, in order; a file named twice is an error (its rows would count twice)."""
    sources: List[Source] = []
    for spec in specs:
        matches = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
        if not matches:
            raise InputError(spec, None, "glob matches nothing")
        for match in matches:
            if not os.path.isdir(match):
                sources += [Source(p) for p in expand_inputs(match)]
            elif is_dataset_folder(match):
                sources += dataset_sources(match, split)
            else:
                folders = sorted(d for d in os.listdir(match) if is_dataset_folder(os.path.join(match, d)))
                if folders:
                    for d in folders:
                        sources += dataset_sources(os.path.join(match, d), split)
                else:
                    sources += [Source(p) for p in expand_inputs(match)]
    seen = set()
    for s in sources:
        key = os.path.realpath(s.path)
        if key in seen:
            raise InputError(s.path, None, "given twice (through --input or a manifest): its rows would count twice")
        seen.add(key)
    return sources


# -- reading rows -------------------------------------------------------------------------------------------------


@dataclass
class Example:
    where: str  # "path:line"
    context: str
    pairs: List[Dict[str, str]]
    copies: int = 1


def canonical_pairs(qa_list) -> List[Dict[str, str]]:
    """The pairs stripped (as the parser strips them); LineError for a pair the parser would not give back."""
    pairs = []
    for j, qa in enumerate(qa_list):
        q, a = qa["Q"].strip(), qa["A"].strip()
        if not q or not a:
            raise LineError("bad pair", f"QA_list[{j}] has an empty {'question' if not q else 'answer'}")
        for marker in WIRE_MARKERS:
            if marker in q or marker in a:
                raise LineError(
                    "bad pair",
                    f"QA_list[{j}] contains the wire-format marker {marker!r} (the synthesizer's parser splits on it)",
                )
        pairs.append({"Q": q, "A": a})
    if parse_pred(cook_pairs(pairs), dedup=False) != pairs:  # the rules above are the parser's; keep them honest
        raise LineError("bad pair", "the pairs do not come back unchanged through the synthesizer's parser")
    return pairs


def _row_dataset(value: dict, source: Source) -> str:
    if source.dataset is not None:
        return source.dataset
    if isinstance(value.get("rc_name"), str) and value["rc_name"].strip():
        return value["rc_name"].strip()
    return _SUFFIXES.sub("", os.path.basename(source.path))


def read_rows(sources: Sequence[Source], bad: BadLines, seed: int) -> Tuple[Dict[str, List[Example]], Counter]:
    """Examples by dataset (in input order) and counts; a row's copies follow its source's weight (seeded)."""
    by_dataset: Dict[str, List[Example]] = {}
    counts: Counter = Counter()

    def check(value):
        entry = Entry.from_json(value)
        return value, entry, canonical_pairs(entry.qa_list)

    for source in sources:
        rng = random.Random(f"{seed}:weight:{source.path}")
        whole, frac = divmod(source.weight, 1.0)
        for number, (value, entry, pairs) in read_jsonl(source.path, bad, check):
            dataset = _row_dataset(value, source)
            counts[(dataset, "rows_read")] += 1
            copies = int(whole) + (1 if frac and rng.random() < frac else 0)
            if not pairs:
                counts[(dataset, "rows_without_pairs")] += 1
                continue
            if copies == 0:
                counts[(dataset, "rows_weighted_out")] += 1
                continue
            by_dataset.setdefault(dataset, []).append(Example(f"{source.path}:{number}", entry.context, pairs, copies))
    return by_dataset, counts


# -- sampling -----------------------------------------------------------------------------------------------------


def select_examples(examples: List[Example], cap: int, seed: int, dataset: str) -> List[Example]:
    """At most `cap` (0: all) distinct rows, most pairs first, ties in a seeded order; returned in packing order:
    every row's first copy (seeded shuffle), then every second copy, and so on."""
    rng = random.Random(f"{seed}:{dataset}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    order.sort(key=lambda i: -len(examples[i].pairs))  # stable: equal counts keep the seeded order
    chosen = [examples[i] for i in (order[:cap] if cap else order)]
    rounds = []
    for r in range(max((e.copies for e in chosen), default=0)):
        batch = [e for e in chosen if e.copies > r]
        rng.shuffle(batch)
        rounds += batch
    return rounds


# -- tokens -------------------------------------------------------------------------------------------------------


def literal_token_id(tokenizer: Tokenizer, marker: str) -> Optional[int]:
    """The id of `marker` when the tokenizer has it as one special token that its library would match inside text
    (a SentencePiece control piece, an added token of a tokenizer.json), else None (then it is plain text)."""
    sp = getattr(tokenizer, "_sp", None)  # SentencePieceTokenizer's processor
    if sp is not None:
        i = sp.piece_to_id(marker)
        return i if i != sp.unk_id() and sp.id_to_piece(i) == marker else None
    tok = getattr(tokenizer, "_tok", None)  # HuggingFaceTokenizer's / GPT2BPETokenizer's tokenizers.Tokenizer
    if tok is not None and hasattr(tok, "get_added_tokens_decoder"):
        for i, added in tok.get_added_tokens_decoder().items():
            if added.content == marker:
                return i
    return None


class WireTokenizer:
    """Wire-format text -> ids, as the synthesis engines tokenize prompts (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.marker_ids = {m: i for m in (BOS, EOS) if (i := literal_token_id(tokenizer, m)) is not None}
        self._split = re.compile("(" + "|".join(map(re.escape, self.marker_ids)) + ")") if self.marker_ids else None

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self._split is None:
            return self.tokenizer.encode_batch(list(texts))
        parts = [self._split.split(t) for t in texts]
        pieces = [p for ps in parts for p in ps if p and p not in self.marker_ids]
        encoded = iter(self.tokenizer.encode_batch(pieces) if pieces else [])
        out = []
        for ps in parts:
            ids: List[int] = []
            for p in ps:
                if p in self.marker_ids:
                    ids.append(self.marker_ids[p])
                elif p:
                    ids.extend(next(encoded))
            out.append(ids)
        return out

    def encode_examples(self, examples: Sequence[Example], stats: Counter) -> List[Tuple[List[int], int]]:
        """(ids, number of prompt tokens) per example; the tokens from that number on carry loss."""
        out = []
        for start in range(0, len(examples), ENCODE_BATCH):
            batch = examples[start : start + ENCODE_BATCH]
            prompts = [cook_context(e.context) for e in batch]
            targets = [cook_pairs(e.pairs) + EOS for e in batch]
            prompt_ids = self.encode_batch(prompts)
            whole_ids = self.encode_batch([p + t for p, t in zip(prompts, targets)])
            apart = [i for i, (p, w) in enumerate(zip(prompt_ids, whole_ids)) if w[: len(p)] != p]
            target_ids = dict(zip(apart, self.encode_batch([targets[i] for i in apart]) if apart else []))
            stats["prompt_boundary_split"] += len(apart)
            for i, (p, w) in enumerate(zip(prompt_ids, whole_ids)):
                out.append((p + target_ids[i] if i in target_ids else w, len(p)))
        return out


# -- packing ------------------------------------------------------------------------------------------------------


@dataclass
class Packed:
    tokens: List[np.ndarray] = field(default_factory=list)
    masks: List[np.ndarray] = field(default_factory=list)
    datasets: List[str] = field(default_factory=list)


def pack_examples(
    dataset: str, examples: Sequence[Example], encoded, capacity: int, dtype, packed: Packed, stats: Counter
):
    """Greedy, in order: an example joins the current sequence while it fits and its row is not in it yet."""
    tokens: List[int] = []
    mask: List[int] = []
    rows = set()

    def flush():
        if tokens:
            packed.tokens.append(np.asarray(tokens, dtype=dtype))
            packed.masks.append(np.asarray(mask, dtype=np.uint8))
            packed.datasets.append(dataset)
            stats["sequences"] += 1
            stats["tokens"] += len(tokens)
            stats["loss_tokens"] += sum(mask)
        tokens.clear()
        mask.clear()
        rows.clear()

    for example, (ids, prompt_len) in zip(examples, encoded):
        if len(ids) > capacity:
            stats["too_long"] += 1
            continue
        if tokens and (len(tokens) + len(ids) > capacity or example.where in rows):
            flush()
        tokens.extend(ids)
        mask.extend([0] * prompt_len + [1] * (len(ids) - prompt_len))
        rows.add(example.where)
        stats["examples_packed"] += 1
        for pair in example.pairs:
            stats[f"pairs:{pair_type(pair)}"] += 1
    flush()


# -- the build ----------------------------------------------------------------------------------------------------


def _decontaminate(by_dataset: Dict[str, List[Example]], cfg: TuningDataConfig, counts: Counter) -> dict:
    """Drop pairs (and contexts) that overlap the evaluation sets, with the corpus stage's check."""
    from megatron_ipt.corpus.decontam import decontaminate, load_eval_sets
    from megatron_ipt.corpus.recipes import Inputs

    ngrams = load_eval_sets(cfg.eval_sets, cfg.eval_keys, n=cfg.ngram)
    report_counts: Counter = Counter()
    for dataset, examples in by_dataset.items():
        inputs = Inputs(tuning=[(e.where, Entry(e.context, e.pairs)) for e in examples])
        clean, report = decontaminate(inputs, ngrams, drop_texts=True)
        report_counts.update(report.counts)
        kept = {where: entry.qa_list for where, entry in clean.tuning}
        survivors = []
        for e in examples:
            pairs = kept.get(e.where)
            if not pairs:  # the context overlapped (row dropped) or every pair did
                counts[(dataset, "rows_decontaminated")] += 1
            else:
                counts[(dataset, "pairs_decontaminated")] += len(e.pairs) - len(pairs)
                survivors.append(replace(e, pairs=pairs))
        by_dataset[dataset] = survivors
    return {
        "eval_files": len(ngrams.files),
        "eval_texts": ngrams.texts,
        "ngrams": ngrams.ngrams,
        "n": ngrams.n,
        **dict(sorted(report_counts.items())),
    }


def build_tuning_data(cfg: TuningDataConfig) -> dict:
    """Read, sample, render, pack and write; returns the summary (also written to {prefix}.tuning.json).
    Raises InputError for bad input, before anything is written."""
    cfg.check()
    start = time.time()
    tokenizer_spec = replace(cfg.tokenizer, include_special_tokens=False)  # the wire format's BOS rule
    tokenizer = tokenizer_spec.build()
    sources = discover_sources(cfg.inputs, cfg.split)
    bad = BadLines(skip=cfg.skip_bad_lines)
    by_dataset, counts = read_rows(sources, bad, cfg.seed)
    decontam = _decontaminate(by_dataset, cfg, counts) if cfg.eval_sets else {}

    wire = WireTokenizer(tokenizer)
    dtype_code = optimal_dtype_code(tokenizer.vocab_size)
    dtype = np.dtype(DTYPE_NAMES[dtype_code])
    packed = Packed()
    per_dataset: Dict[str, dict] = {}
    totals: Counter = Counter()
    for dataset in sorted(by_dataset):
        stats: Counter = Counter()
        chosen = select_examples(by_dataset[dataset], cfg.max_examples_per_dataset, cfg.seed, dataset)
        stats["rows_selected"] = len({e.where for e in chosen})
        stats["examples"] = len(chosen)
        encoded = wire.encode_examples(chosen, stats)
        pack_examples(dataset, chosen, encoded, cfg.seq_length + 1, dtype, packed, stats)
        per_dataset[dataset] = stats
    datasets = sorted(set(per_dataset) | {d for d, _ in counts})
    summary_datasets = {}
    for dataset in datasets:
        stats = Counter({k: v for (d, k), v in counts.items() if d == dataset})
        stats.update(per_dataset.get(dataset, {}))
        srcs = [s for s in sources if s.dataset == dataset]
        summary_datasets[dataset] = {
            "sources": [{"path": s.path, "weight": s.weight} for s in srcs],
            "stand_in": any(s.stand_in for s in srcs),
            **{k: stats[k] for k in sorted(stats)},
        }
        totals.update(stats)
    if not packed.tokens:
        raise InputError(", ".join(cfg.inputs), None, "no example to pack (no rows with pairs, or every one too long)")

    outputs = cfg.outputs()
    order = list(range(len(packed.tokens)))
    random.Random(f"{cfg.seed}:sequences").shuffle(order)
    write_start = time.time()
    writers = []
    try:
        for key, arrays, code in (("loss_mask", packed.masks, MASK_DTYPE_CODE), ("text", packed.tokens, dtype_code)):
            writers.append(IndexedDatasetWriter(outputs[key], dtype_code=code))
            for i in range(0, len(order), 1024):
                chunk = [arrays[j] for j in order[i : i + 1024]]
                lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
                writers[-1].add_batch(np.concatenate(chunk).astype(np.int32, copy=False), lengths)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    if os.path.exists(outputs["summary"]):  # an old summary never describes the new data
        os.remove(outputs["summary"])
    finalize_together(writers)  # one commit, mask first: a text dataset never appears without its mask
    summary = {
        "what": "synthesizer tuning data (tools/build_tuning_data.py): packed few-shot sequences + loss mask",
        "stand_in": any(d["stand_in"] for d in summary_datasets.values()),
        "inputs": list(cfg.inputs),
        "split": cfg.split,
        "seed": cfg.seed,
        "seq_length": cfg.seq_length,
        "max_examples_per_dataset": cfg.max_examples_per_dataset,
        "tokenizer": {
            "flags": tokenizer_spec.to_flags(),
            "vocab_size": tokenizer.vocab_size,
            "literal_markers_as_ids": wire.marker_ids,
        },
        "outputs": {
            "text": outputs["text"],
            "loss_mask": outputs["loss_mask"],
            "dtype": DTYPE_NAMES[dtype_code],
            "mask_convention": "mask[i] = 1 iff token i carries loss: labels = tokens[1:], loss_mask = mask[1:]",
        },
        "datasets": summary_datasets,
        "totals": {k: totals[k] for k in sorted(totals)},
        "decontamination": decontam,
        "skipped_lines": dict(sorted(bad.counts.items())),
        "skipped_line_examples": bad.examples,
    }
    write_json_atomic(outputs["summary"], summary)
    summary["seconds"] = {"total": time.time() - start, "write": time.time() - write_start}  # not in the file
    return summary
