"""Sharded, resumable synthesis driver.

Texts (in input order) are split into ``num_shards`` contiguous shards; this process handles one shard and
processes it in parts of ``part_size`` texts, each part going through all M rounds and being written as
``{out}/shard{S:05d}-part{P:05d}.jsonl`` (one collection per line, reference §9) via temp file + rename.
With ``resume`` finished parts are skipped, so a killed run continues without duplicating or losing texts.
"""
import glob
import json
import os
import time
from collections import Counter

from .format import pair_type
from .rounds import split_long_text, synthesize_rounds


def input_files(spec):
    if os.path.isdir(spec):
        files = sorted(glob.glob(os.path.join(spec, "**", "*.jsonl"), recursive=True))
    else:
        files = sorted(glob.glob(spec))
    if not files:
        raise FileNotFoundError(f"no input JSONL files match {spec!r}")
    return files


def read_texts(files, text_key="text"):
    texts = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
                    raise ValueError(f"{path}:{lineno}: no string field {text_key!r}")
                texts.append(obj[text_key])
    return texts


def _write_atomic(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run(input_spec, output_dir, engine, rounds=1, text_key="text", max_model_len=4096, max_new_tokens=400,
        num_shards=1, shard_index=0, part_size=1000, resume=False, progress=None):
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} not in [0, {num_shards})")
    texts = [p for t in read_texts(input_files(input_spec), text_key)
             for p in split_long_text(t, max_model_len, max_new_tokens)]
    per = -(-len(texts) // num_shards)
    mine = texts[shard_index * per:(shard_index + 1) * per]
    os.makedirs(output_dir, exist_ok=True)
    # The layout of parts must not change between a run and its resume, or texts would be lost/duplicated.
    layout = {"input": input_spec, "text_key": text_key, "rounds": rounds, "num_shards": num_shards,
              "shard_index": shard_index, "part_size": part_size, "texts": len(mine)}
    manifest_path = os.path.join(output_dir, f"manifest-shard{shard_index:05d}.json")
    if resume and os.path.exists(manifest_path):
        old = json.load(open(manifest_path))
        diff = {k: (old.get(k), v) for k, v in layout.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{manifest_path}: --resume with different settings (old, new): {diff}")
    _write_atomic(manifest_path, [json.dumps(dict(layout, complete=False), indent=1) + "\n"])
    stats = Counter()
    t0 = time.perf_counter()
    parts = []
    for p, start in enumerate(range(0, len(mine), part_size)):
        path = os.path.join(output_dir, f"shard{shard_index:05d}-part{p:05d}.jsonl")
        chunk = mine[start:start + part_size]
        parts.append({"file": os.path.basename(path), "texts": len(chunk)})
        if resume and os.path.exists(path):
            stats["skipped_texts"] += len(chunk)
        else:
            if os.path.exists(path):
                raise FileExistsError(f"{path} exists; pass --resume to continue a run")
            cols, failures = synthesize_rounds(chunk, engine.generate, rounds, max_model_len, max_new_tokens)
            _write_atomic(path, [json.dumps(c, ensure_ascii=False) + "\n" for c in cols])
            stats["texts"] += len(chunk)
            stats["failures"] += failures
            for c in cols:
                for e in c:
                    stats["pairs"] += len(e["QA_list"])
                    for q in e["QA_list"]:
                        stats[pair_type(q)] += 1
        if progress:
            progress(len(chunk))
    manifest = dict(layout, engine=engine.name, parts=parts, complete=True)
    _write_atomic(manifest_path, [json.dumps(manifest, indent=1) + "\n"])
    stats["seconds"] = time.perf_counter() - t0
    return stats
