"""A STAND-IN tuning collection for CPU runs and tests, NOT the paper's data.

The real collection (``instruction-pretrain/ft-instruction-synthesizer-collection``: 35 reading-comprehension
datasets with human-written pairs) cannot be downloaded here. This builds a small one in the same layout from text
we have: the embedded corpus (megatron_ipt/assets.py: CPython's pydoc topics and Newton's Opticks, what
``make quickstart`` uses), cut into pieces of at most ``max_words`` words, with pairs mined by the rules engine
(megatron_ipt/synthesis/engines/rules.py; its options are shuffled here, seeded, since the miner lists the gold first).
Its pairs are therefore rule-made and its "datasets" are the corpus' sources; it exercises the layout, the
sampling, the packing and the training, and says nothing about the quality of a synthesizer tuned on the real data.

Layout written under ``output_dir`` (every manifest item carries ``"stand_in": true``, every row
``"QA_type": "stand-in: rules-mined"``, and ``README.md`` says so):

    README.md, standin.json                      what this is; counts, seed, held-out document ids
    standin_<source>/shard/00000.jsonl           rows of the training documents
    standin_<source>/shard/00001.jsonl           rows of the held-out documents
    standin_<source>/json/train.json, valid.json manifests (train: shard 00000; valid: shard 00001)
    heldout.jsonl                                the held-out pieces as raw text, {"id", "source", "text"}:
                                                 input for tools/synthesize.py (the demo's evaluation)

Held-out documents (a ``holdout_fraction`` of each source's documents, seeded) are whole documents, so no piece of
a held-out text is seen in tuning. The directory is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from typing import Dict, List

from megatron_ipt import assets
from megatron_ipt.errors import ConfigError
from megatron_ipt.formats.wire import OPTIONS_MARK
from megatron_ipt.io.atomic import write_json_atomic, write_jsonl_atomic
from megatron_ipt.synthesis.engines.rules import mine_pairs

QA_TYPE = "stand-in: rules-mined"
MARKER = "standin.json"
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def pieces(text: str, max_words: int) -> List[str]:
    """`text` cut at paragraph (else sentence, else word) boundaries into pieces of at most `max_words` words, with
    white space collapsed."""
    units: List[str] = []
    for paragraph in _PARAGRAPH.split(text):
        words = paragraph.split()
        if len(words) <= max_words:
            units.append(" ".join(words))
            continue
        for sentence in _SENTENCE_END.split(" ".join(words)):
            sw = sentence.split()
            units += [" ".join(sw[i : i + max_words]) for i in range(0, len(sw), max_words)]
    out, current = [], []
    for unit in filter(None, units):
        if current and len(" ".join(current + [unit]).split()) > max_words:
            out.append(" ".join(current))
            current = []
        current.append(unit)
    if current:
        out.append(" ".join(current))
    return out


def _shuffle_options(question: str, rng: random.Random) -> str:
    if OPTIONS_MARK not in question:
        return question
    stem, block = question.split(OPTIONS_MARK, 1)
    options = block.split("\n- ")
    rng.shuffle(options)
    return stem + OPTIONS_MARK + "\n- ".join(options)


def make_standin(
    output_dir: str,
    seed: int = 1234,
    holdout_fraction: float = 0.1,
    max_words: int = 200,
    max_pairs: int = 6,
    overwrite: bool = False,
) -> dict:
    """Write the stand-in collection; returns its summary (also written to standin.json)."""
    if not 0 < holdout_fraction < 1:
        raise ConfigError(f"--holdout-fraction must be in (0, 1), got {holdout_fraction}")
    if max_words < 20:
        raise ConfigError(f"--max-words must be >= 20, got {max_words}")
    if os.path.exists(output_dir) and os.listdir(output_dir):
        if not os.path.exists(os.path.join(output_dir, MARKER)):
            raise FileExistsError(f"{output_dir}: exists and is not a stand-in collection; choose another directory")
        if not overwrite:
            raise FileExistsError(f"{output_dir}: a stand-in collection is already there (--overwrite replaces it)")

    documents = assets.default_corpus()
    by_source: Dict[str, List[dict]] = {}
    for doc in documents:
        by_source.setdefault(doc["source"], []).append(doc)
    tmp = f"{output_dir.rstrip('/')}.inprogress"
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        "what": "STAND-IN synthesizer tuning collection: rules-mined pairs on the embedded corpus, not the paper's data",
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "max_words": max_words,
        "max_pairs": max_pairs,
        "datasets": {},
        "heldout_documents": [],
    }
    # Held-out documents first, so a training piece that repeats a held-out piece word for word (pydoc topics
    # share paragraphs) can be left out: no held-out text is ever tuned on.
    held: Dict[str, set] = {}
    for source in sorted(by_source):
        rng = random.Random(f"{seed}:{source}")
        n = len(by_source[source])
        held[source] = set(rng.sample(range(n), max(1, round(holdout_fraction * n))))
    split_pieces = {
        (source, i): pieces(doc["text"], max_words) for source, docs in by_source.items() for i, doc in enumerate(docs)
    }
    held_texts = {p for (source, i), ps in split_pieces.items() if i in held[source] for p in ps}
    heldout_rows = []
    try:
        for source in sorted(by_source):
            docs = by_source[source]
            dataset = f"standin_{source}"
            shards: Dict[str, List[dict]] = {"train": [], "valid": []}
            repeats = 0
            for i, doc in enumerate(docs):
                split = "valid" if i in held[source] else "train"
                if split == "valid":
                    summary["heldout_documents"].append(doc["id"])
                for k, piece in enumerate(split_pieces[(source, i)]):
                    if split == "valid":
                        heldout_rows.append({"id": f"{doc['id']}.{k}", "source": source, "text": piece})
                    elif piece in held_texts:
                        repeats += 1
                        continue
                    pairs = mine_pairs(piece, max_pairs)
                    if not pairs:
                        continue
                    pair_rng = random.Random(f"{seed}:{doc['id']}:{k}")
                    shards[split].append(
                        {
                            "context": piece,
                            "QA_list": [{"Q": _shuffle_options(q, pair_rng), "A": a} for q, a in pairs],
                            "QA_type": QA_TYPE,
                            "rc_name": dataset,
                        }
                    )
            folder = os.path.join(tmp, dataset)
            for number, split in enumerate(("train", "valid")):
                shard = f"shard/{number:05d}.jsonl"
                write_jsonl_atomic(os.path.join(folder, shard), shards[split])
                manifest = [{"source": shard, "source_lang": "en", "weight": 1.0, "stand_in": True}]
                write_json_atomic(os.path.join(folder, "json", f"{split}.json"), manifest)
            summary["datasets"][dataset] = {
                "documents": len(docs),
                "heldout_documents": len(held[source]),
                "train_pieces_left_out_as_heldout_repeats": repeats,
                "train_rows": len(shards["train"]),
                "valid_rows": len(shards["valid"]),
                "train_pairs": sum(len(r["QA_list"]) for r in shards["train"]),
            }
        summary["heldout_pieces"] = len(heldout_rows)
        write_jsonl_atomic(os.path.join(tmp, "heldout.jsonl"), heldout_rows)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(README)
        write_json_atomic(os.path.join(tmp, MARKER), summary)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


README = """# STAND-IN synthesizer tuning collection (not the paper's data)

Built by `tools/build_tuning_data.py make-standin` because the real collection
(`instruction-pretrain/ft-instruction-synthesizer-collection`) cannot be downloaded here. Contexts are pieces of the
embedded corpus (CPython's pydoc topics, Newton's Opticks); pairs were mined by the rules engine
(`megatron_ipt/synthesis/engines/rules.py`), not written by people. Same layout as the real collection
(`<Dataset>/shard/*.jsonl`, `<Dataset>/json/{train,valid}.json`); `heldout.jsonl` holds the held-out documents'
pieces as raw text for `tools/synthesize.py`. See `standin.json` for counts and the held-out document ids.
"""
