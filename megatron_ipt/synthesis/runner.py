"""Sharded, resumable synthesis driver.

Input records (JSONL, in input order; blank lines ignored) are dealt to ``num_shards`` shards round-robin: the
i-th record goes to shard ``i % num_shards``, so a Slurm array task reads the input once and keeps only its
own records. Each record's text is split into pieces that fit one prompt (``rounds.split_long_text``); the
shard's pieces are processed in parts of ``part_size``, each part going through all M rounds and written as
``{out}/shard{S:05d}-part{P:05d}.jsonl`` (one ``Collection`` per line, megatron_ipt/formats/records.py) via temp
file + rename.
Every entry also carries the input record's ``carry_keys`` (default ``id``, ``source``) and, for a split
text, ``piece``/``pieces``.

``manifest-shard{S:05d}.json`` records the layout (input content hash, settings, parts) and is rewritten after
every part; ``resume`` skips finished parts and refuses a changed input or changed settings, so a killed run
continues without duplicating or losing texts.
"""

import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter

from megatron_ipt.formats.wire import pair_type
from megatron_ipt.io.atomic import write_json_atomic, write_jsonl_atomic
from megatron_ipt.io.inputs import Shard, expand_inputs, iter_lines
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, parse_line, string_field

from .rounds import split_long_text, synthesize_rounds


def read_shard(spec, text_key="text", carry_keys=("id", "source"), num_shards=1, shard_index=0, skip_bad_lines=False):
    """(texts, extras, info) of this shard's records; info has the input's sha256 and line counts.

    A bad line raises InputError(file, line, problem), or with ``skip_bad_lines`` is counted by kind."""
    files = expand_inputs(spec)
    digest = hashlib.sha256()
    texts, extras = [], []
    bad = BadLines(skip=skip_bad_lines)
    records = blank = 0
    for path in files:
        digest.update(b"\0file\0")
        for _, number, raw in iter_lines(Shard(path)):
            digest.update(raw)
            if not raw.strip():
                blank += 1
                continue
            try:
                text, extra = _text_and_carried(parse_line(raw), text_key, carry_keys)
            except LineError as e:
                bad.handle(path, number, e)
                continue
            if records % num_shards == shard_index:
                texts.append(text)
                extras.append(extra)
            records += 1
    info = {
        "files": len(files),
        "input_sha256": digest.hexdigest(),
        "records": records,
        "blank_lines": blank,
        "skipped_lines": dict(bad.counts),
        "skipped_examples": bad.examples,
    }
    return texts, extras, info


def _text_and_carried(record, text_key, carry_keys):
    if not isinstance(record, dict):
        raise LineError("not a JSON object", f"got {json_type(record)}")
    text = string_field(record, text_key)
    if not text.strip():
        raise LineError("empty text", f"key {text_key!r} is blank")
    return text, {k: record[k] for k in carry_keys if k in record}


def split_pieces(texts, extras, max_model_len, max_new_tokens, count_tokens):
    out_texts, out_extras = [], []
    for text, extra in zip(texts, extras):
        pieces = split_long_text(text, max_model_len, max_new_tokens, count_tokens)
        for k, piece in enumerate(pieces):
            out_texts.append(piece)
            out_extras.append(extra if len(pieces) == 1 else dict(extra, piece=k, pieces=len(pieces)))
    return out_texts, out_extras


def collection_stats(cols):
    stats = Counter()
    for c in cols:
        for e in c:
            stats["pairs"] += len(e.qa_list)
            stats["texts_without_pairs"] += not e.qa_list
            for q in e.qa_list:
                stats[pair_type(q)] += 1
    return stats


def run(
    input_spec,
    output_dir,
    engine,
    rounds=1,
    text_key="text",
    max_model_len=4096,
    max_new_tokens=400,
    num_shards=1,
    shard_index=0,
    part_size=1000,
    resume=False,
    skip_bad_lines=False,
    carry_keys=("id", "source"),
    progress=None,
):
    """Synthesize this shard; returns the summary dict (see ``format_summary``).

    ``progress(total)`` (optional) returns an object with ``update(n)`` and ``close()``; it is told about
    every text as its generation finishes (and about the texts of parts skipped by ``resume``)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} not in [0, {num_shards})")
    if rounds < 1 or part_size < 1:
        raise ValueError("--rounds and --part-size must be at least 1")
    start = time.perf_counter()
    texts, extras, info = read_shard(input_spec, text_key, carry_keys, num_shards, shard_index, skip_bad_lines)
    records = len(texts)
    texts, extras = split_pieces(texts, extras, max_model_len, max_new_tokens, engine.count_tokens)
    os.makedirs(output_dir, exist_ok=True)
    # Anything that changes which text lands in which part, or how pairs are made, must not change on resume.
    layout = {
        "input": input_spec,
        "input_sha256": info["input_sha256"],
        "text_key": text_key,
        "skip_bad_lines": skip_bad_lines,
        "rounds": rounds,
        "num_shards": num_shards,
        "shard_index": shard_index,
        "part_size": part_size,
        "max_model_len": max_model_len,
        "max_new_tokens": max_new_tokens,
        "records": records,
        "texts": len(texts),
        **engine.describe(),
    }
    manifest_path = os.path.join(output_dir, f"manifest-shard{shard_index:05d}.json")
    old = {}
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            old = json.load(f)
        if resume:
            diff = {k: (old.get(k), v) for k, v in layout.items() if old.get(k) != v}
            if diff:
                hint = " (the input changed)" if "input_sha256" in diff else ""
                raise ValueError(
                    f"{manifest_path}: --resume with different input or settings{hint}; (old, new): {diff}"
                )
    parts = [
        {"file": f"shard{shard_index:05d}-part{p:05d}.jsonl", "texts": len(texts[s : s + part_size])}
        for p, s in enumerate(range(0, len(texts), part_size))
    ]
    done_before = {p["file"]: p for p in old.get("parts", []) if p.get("done")}
    if not resume:
        existing = [p["file"] for p in parts if os.path.exists(os.path.join(output_dir, p["file"]))]
        if existing:
            raise FileExistsError(f"{os.path.join(output_dir, existing[0])} exists; pass --resume to continue a run")

    def save_manifest(complete):
        write_json_atomic(manifest_path, dict(layout, parts=parts, complete=complete))

    save_manifest(False)
    stats, before = Counter(), Counter()
    usage_before = engine.usage.as_dict()
    bar = progress(len(texts)) if progress else None
    engine.on_progress = bar.update if bar else None
    try:
        for p, part in enumerate(parts):
            path = os.path.join(output_dir, part["file"])
            if resume and os.path.exists(path):
                part.update(done_before.get(part["file"], {}), done=True)
                stats["skipped_texts"] += part["texts"]
                before.update(part.get("stats", {}))
                if bar:
                    bar.update(part["texts"])
                continue
            lo = p * part_size
            cols, failures = synthesize_rounds(
                texts[lo : lo + part_size],
                engine.generate,
                rounds,
                max_model_len,
                max_new_tokens,
                engine.count_tokens,
                extras[lo : lo + part_size],
            )
            write_jsonl_atomic(path, (c.to_json() for c in cols))
            part_stats = collection_stats(cols) + Counter(failures=failures)
            part.update(done=True, stats=dict(part_stats))
            stats.update(part_stats)
            stats["texts"] += part["texts"]
            save_manifest(False)
    finally:
        engine.on_progress = None
        if bar:
            bar.close()
    save_manifest(True)
    usage = {k: v - usage_before[k] for k, v in engine.usage.as_dict().items()}
    return dict(
        stats,
        **info,
        records_in_shard=records,
        pieces=len(texts),
        usage=usage,
        done_before=dict(before),
        seconds=time.perf_counter() - start,
        engine=engine.describe(),
    )


def format_summary(s):
    n = max(s.get("texts", 0), 1)
    u, secs = s["usage"], max(s["seconds"], 1e-9)
    # Model engines report their tokenizer's counts; the rules engine has none unless --tokenizer is given.
    estimate = (
        " (words x1.5 estimate)"
        if s["engine"]["length_guard"] == "words x1.5" and s["engine"]["engine"] == "rules"
        else ""
    )
    lines = [
        f"texts          {s.get('texts', 0)} synthesized, {s.get('skipped_texts', 0)} skipped as done "
        f"({s['records_in_shard']} records of {s['records']} in this shard, {s['pieces']} texts after splitting)",
        f"pairs          {s.get('pairs', 0)} ({s.get('pairs', 0) / n:.2f} per text; "
        f"{s.get('texts_without_pairs', 0)} texts without pairs)",
        f"pair types     free-form {s.get('free-form', 0)}, options {s.get('options', 0)}, CoT {s.get('cot', 0)}",
        f"failures       {s.get('failures', 0)} generations (zero pairs, run went on)",
        f"tokens{estimate:<9} prompt {u['prompt_tokens']:,} ({u['prompt_tokens'] / secs:,.0f}/s), "
        f"generated {u['generated_tokens']:,} ({u['generated_tokens'] / secs:,.0f}/s)",
        f"time           {secs:.1f} s ({s.get('texts', 0) / secs:,.1f} texts/s; {u['seconds']:.1f} s in the engine)",
    ]
    if s.get("skipped_texts"):
        b = s["done_before"]
        lines.append(
            f"done before    {s['skipped_texts']} texts: {b.get('pairs', 0)} pairs, {b.get('failures', 0)} "
            "failures (from the manifest)"
        )
    if s["skipped_lines"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["skipped_lines"].items()))
        lines.append(f"skipped lines  {sum(s['skipped_lines'].values())}: {kinds}")
        lines += [f"  {e}" for e in s["skipped_examples"]]
    return "\n".join(lines)


class Progress:
    """A tqdm bar over texts on a terminal; otherwise a log line every ``log_interval`` texts. Thread-safe
    (the openai engine reports from its worker threads)."""

    def __init__(self, total, log_interval=1000, desc="synthesize"):
        self.total, self.done, self.log_interval = total, 0, max(1, log_interval)
        self.start, self.lock, self.bar = time.time(), threading.Lock(), None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="text", desc=desc, dynamic_ncols=True)

    def update(self, n):
        with self.lock:
            before, self.done = self.done, self.done + n
            if self.bar is not None:
                self.bar.update(n)
            elif self.done // self.log_interval > before // self.log_interval or self.done == self.total:
                rate = self.done / max(time.time() - self.start, 1e-9)
                print(f"synthesized {self.done}/{self.total} texts ({rate:.2f} texts/s)", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
