#!/usr/bin/env python
"""Score one or two instruction synthesizers on held-out tuning rows, side by side (see docs/tuning.md "Judging").

    python tools/judge_synthesizer.py --input heldout.jsonl --model BASE_HF_DIR --model TUNED_HF_DIR \\
        --name base --name tuned --engine hf --output judge.json

Rows are the tuning collection's ({"context", "QA_list": [{"Q", "A"}], "QA_type", "rc_name"}). Zero-shot and few-shot
(one held-out demonstration, as round-2 prompts carry): format validity (% of generations with >= 1 valid pair after
the synthesis parser), pairs per text, pair-type mix, and response accuracy (context + gold question -> greedy
answer vs the gold answer: exact match, token F1). A console table and a JSON file.
"""

import argparse
import logging
import os
import sys

from megatron_ipt.errors import UserError
from megatron_ipt.io.atomic import check_writable_dir, write_json_atomic
from megatron_ipt.io.cli import report_error
from megatron_ipt.io.jsonl import BadLines


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="held-out tuning rows, read as tools/build_tuning_data.py reads them: collection dataset folders or the "
        "collection's root (their --split manifest), or JSONL files of rows (files, globs, directories)",
    )
    ap.add_argument(
        "--split",
        choices=("train", "valid"),
        default="valid",
        help="which manifest of a dataset folder (default valid)",
    )
    ap.add_argument(
        "--model",
        action="append",
        required=True,
        help="a synthesizer (hf: HF directory or .gguf; vllm: HF id or directory; openai: served name); give it "
        "twice to compare two (e.g. base and tuned)",
    )
    ap.add_argument("--name", action="append", help="a column label per --model (default: the directory's name)")
    ap.add_argument(
        "--engine",
        default="hf",
        choices=("hf", "vllm", "openai", "rules"),
        help="rules: the model-free miner, a baseline",
    )
    ap.add_argument("--output", help="write the scores (and the first generations of each setting) as JSON here")
    ap.add_argument(
        "--max-rows", type=int, default=0, help="judge N rows only, the first ones of each dataset in turn (0: all)"
    )
    ap.add_argument(
        "--max-questions-per-row", type=int, default=0, help="answer at most N gold questions of a row (0: all)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=400, help="for the pairs of one text (synthesis's default)")
    ap.add_argument("--answer-max-new-tokens", type=int, default=64, help="for one answer")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--skip-bad-lines", action="store_true", help="skip unusable rows (counted) instead of stopping")
    engines = ap.add_argument_group("engine settings (as tools/synthesize.py)")
    engines.add_argument("--batch-size", type=int, default=8, help="hf")
    engines.add_argument("--dtype", default=None, help="hf: float32 (default); vllm: auto")
    engines.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm")
    engines.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm")
    engines.add_argument("--enforce-eager", action="store_true", help="vllm")
    engines.add_argument("--openai-base-url", dest="base_url", action="append", help="openai: server URL(s)")
    return ap


def read_heldout(specs, split, bad, max_rows=0):
    """Rows with pairs as judge.py takes them (Entry, the dataset as rc_name), through the tuning-data reader (so
    manifests, rc_name and the checks are build_tuning_data's); with max_rows, the first rows of each dataset in
    turn, so that every dataset is judged."""
    import math

    from megatron_ipt.formats.records import Entry
    from megatron_ipt.tuning.sequences import discover_sources, read_rows

    by_dataset, _ = read_rows(discover_sources(specs, split), bad, seed=0)  # weights do not matter for judging
    each = math.ceil(max_rows / len(by_dataset)) if max_rows and by_dataset else None
    rows = [
        Entry(example.context, example.pairs, carried={"rc_name": dataset})
        for dataset, examples in by_dataset.items()
        for example in examples[:each]
    ]
    return rows[:max_rows] if max_rows else rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    names = args.name or [os.path.basename(os.path.normpath(m)) for m in args.model]
    if len(args.model) > 2 or len(names) != len(args.model) or len(set(names)) != len(names):
        print("error: give one or two --model, and as many distinct --name (or none)", file=sys.stderr)
        return 2
    from megatron_ipt.synthesis import judge
    from megatron_ipt.synthesis.engines import build_engine, engine_settings

    bad = BadLines(skip=args.skip_bad_lines)
    try:
        if args.output:  # an unwritable --output fails now, not after the generations
            check_writable_dir(os.path.dirname(os.path.abspath(args.output)))
        rows = read_heldout(args.input, args.split, bad, args.max_rows)
    except (UserError, OSError) as error:
        return report_error(error)
    if not rows:
        print(f"error: {' '.join(args.input)}: no rows with pairs to judge", file=sys.stderr)
        return 1
    if bad.total:
        print(f"skipped {bad.total} bad row(s): " + "; ".join(bad.examples[:3]))
    flags = {
        k: getattr(args, k)
        for k in (
            "max_model_len",
            "batch_size",
            "dtype",
            "tensor_parallel_size",
            "gpu_memory_utilization",
            "enforce_eager",
            "base_url",
        )
    }
    gold = judge.gold_profile(rows)
    print(
        f"judging {len(rows)} held-out rows of {' '.join(args.input)} ({gold['pairs_per_text']:.2f} gold pairs per text)"
    )
    results = {}
    for name, model in zip(names, args.model):
        print(f"{name}: {model}")

        def make_engine(max_new_tokens, model=model):
            # the settings this engine has (one set of flags serves all the engines; rules takes none of them)
            values = dict(flags, model=model, max_new_tokens=max_new_tokens, temperature=0.0)
            return build_engine(args.engine, **engine_settings(args.engine, values))

        try:
            results[name] = judge.judge(
                rows, make_engine, args.max_new_tokens, args.answer_max_new_tokens, args.max_questions_per_row
            )
        except (UserError, OSError) as error:  # missing vLLM, bad model directory
            return report_error(error, has_skip_flag=False)
    print()
    print(judge.format_table(results, gold))
    if args.output:
        try:
            write_json_atomic(
                args.output,
                {
                    "input": args.input,
                    "split": args.split,
                    "rows": len(rows),
                    "engine": args.engine,
                    "models": dict(zip(names, args.model)),
                    "gold": gold,
                    "results": results,
                },
            )
        except OSError as error:  # no space left: named, nothing half-written (atomic)
            return report_error(error, has_skip_flag=False)
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
