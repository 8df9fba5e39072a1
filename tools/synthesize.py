"""Raw texts (JSONL) -> instruction-response collections (megatron_ipt/formats/records.py). See docs/synthesis.md.

    python tools/synthesize.py --input 'data/*.jsonl' --output-dir out/ --engine vllm \\
        --model instruction-pretrain/instruction-synthesizer --rounds 2
"""

import argparse
import logging
import sys

from megatron_ipt.io.atomic import write_json_atomic
from megatron_ipt.io.cli import report_error
from megatron_ipt.io.inputs import InputError
from megatron_ipt.synthesis.engines import ENGINES, build_engine
from megatron_ipt.synthesis.prompting import PROMPT_STYLES
from megatron_ipt.synthesis.rounds import DEFAULT_MAX_IN_FLIGHT, SCHEDULES
from megatron_ipt.synthesis.runner import (
    DEFAULT_MAX_FAILURE_RATE,
    FAILURE_RATE_EXIT,
    OutputError,
    Progress,
    check_output_dir,
    failure_rate_error,
    format_summary,
    run,
)
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = ap.add_argument_group("input and output")
    io.add_argument("--input", required=True, help="JSONL file (.gz/.zst too), glob or directory")
    io.add_argument("--output-dir", required=True)
    io.add_argument("--text-key", default="text")
    io.add_argument(
        "--carry-keys",
        default="id,source",
        help="comma-separated input keys copied into every entry when present (default: id,source)",
    )
    io.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip unusable input lines (counted and reported) instead of stopping",
    )
    io.add_argument("--num-shards", type=int, default=1, help="record i goes to shard i %% num-shards")
    io.add_argument("--shard-index", type=int, default=0)
    io.add_argument("--part-size", type=int, default=1000, help="texts per output part (all rounds per part)")
    io.add_argument(
        "--resume",
        action="store_true",
        help="continue an earlier run: skip its finished parts, retry the texts whose generation failed",
    )
    io.add_argument(
        "--max-failure-rate",
        type=float,
        default=DEFAULT_MAX_FAILURE_RATE,
        help="stop (exit status 3) after the part where more than this fraction of the run's generations failed "
        "(default: %(default)s); failed texts are recorded and --resume retries them",
    )
    io.add_argument("--log-interval", type=int, default=1000, help="texts between progress lines off a terminal")
    io.add_argument(
        "--summary-json",
        default=None,
        help="also write this run's summary (counts, tokens, engine seconds) as JSON here (written atomically)",
    )

    syn = ap.add_argument_group("synthesis")
    syn.add_argument("--engine", default="rules", choices=ENGINES)
    syn.add_argument(
        "--model",
        default=None,
        help="vllm: HF id or directory; hf: directory or .gguf "
        "(default SmolLM2-135M-Instruct); openai: served model name (default: the server's first)",
    )
    syn.add_argument("--rounds", type=int, default=1, help="M: 2 for general corpora, 3 for domain corpora")
    syn.add_argument("--max-model-len", type=int, default=4096)
    syn.add_argument("--max-new-tokens", type=int, default=400)
    syn.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the paper)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument(
        "--prompt-style",
        default="wire",
        choices=PROMPT_STYLES,
        help="wire: the synthesizer's format as is; oneshot/chat: with a demonstration, for "
        "general instruct models (see megatron_ipt/synthesis/prompting.py)",
    )
    syn.add_argument(
        "--schedule",
        default=None,
        choices=SCHEDULES,
        help="pipelined: a chain's next round is asked for as soon as its last is parsed, while other chains are in "
        "flight; barrier: one generate call per round over all its texts (the reference procedure). Same "
        "collections either way. Default: pipelined, except barrier for --engine hf (its pipelined batches mix "
        "rounds, and left padding can change a greedy output in the last bits, so the files could differ)",
    )
    syn.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="pipelined: chains in flight, each with at most one generation asked (default: --max-concurrency "
        f"for openai, the engine's --max-num-seqs for vllm, {DEFAULT_MAX_IN_FLIGHT} for the others)",
    )
    add_tokenizer_args(
        ap,
        required=False,
        title="length-guard tokenizer (rules/openai engines; hf and vllm use the model's own)",
        model_help="a tokenizer.json, HF directory, SentencePiece .model or .tiktoken file to count prompt tokens "
        "for the length guard (default: words x1.5), counted without special tokens: a prompt carries its own <s>; "
        "--tokenizer is the same flag",
        model_aliases=("--tokenizer",),
    )

    gpu = ap.add_argument_group("vllm engine")
    gpu.add_argument(
        "--tensor-parallel-size", "--tensor-model-parallel-size", dest="tensor_parallel_size", type=int, default=1
    )
    gpu.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    gpu.add_argument("--dtype", default=None, help="vllm: auto (default); hf: float32 (default)")
    gpu.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs (faster start)")
    gpu.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="vllm: sequences in one batch (default: vLLM's); also the default --max-in-flight of the vllm engine",
    )

    http = ap.add_argument_group("openai engine")
    http.add_argument(
        "--openai-base-url",
        dest="base_url",
        action="append",
        default=None,
        help="server URL(s), e.g. http://node1:8000/v1; repeat or comma-separate for replicas",
    )
    http.add_argument(
        "--api-key",
        default=None,
        help="sent as 'Authorization: Bearer KEY' (vllm serve --api-key); default: $OPENAI_API_KEY, which keeps the "
        "key out of the process list",
    )
    http.add_argument("--max-concurrency", type=int, default=16, help="requests in flight")
    http.add_argument("--max-retries", type=int, default=4)
    http.add_argument("--request-timeout", type=float, default=600.0, help="seconds without an answer")

    hf = ap.add_argument_group("hf engine")
    hf.add_argument("--batch-size", type=int, default=8)
    return ap


ENGINE_SETTINGS = (
    "model",
    "max_new_tokens",
    "temperature",
    "seed",
    "prompt_style",
    "max_model_len",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "dtype",
    "enforce_eager",
    "max_num_seqs",
    "base_url",
    "api_key",
    "max_concurrency",
    "max_retries",
    "request_timeout",
    "batch_size",
)


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    settings = {k: getattr(args, k) for k in ENGINE_SETTINGS if getattr(args, k) is not None}
    settings["tokenizer"] = TokenizerSpec.from_args(args)
    try:  # before a model loads or a server is asked: a run that could not write its output stops at once
        check_output_dir(args.output_dir)
    except OutputError as e:
        return report_error(e)
    try:
        engine = build_engine(args.engine, **settings)
    except (RuntimeError, ValueError, FileNotFoundError) as e:  # missing vLLM, unreachable server, bad flags
        return report_error(e)
    try:
        summary = run(
            args.input,
            args.output_dir,
            engine,
            args.rounds,
            args.text_key,
            args.max_model_len,
            args.max_new_tokens,
            args.num_shards,
            args.shard_index,
            args.part_size,
            args.resume,
            args.skip_bad_lines,
            tuple(k for k in args.carry_keys.split(",") if k),
            progress=lambda total: Progress(total, args.log_interval),
            max_failure_rate=args.max_failure_rate,
            schedule=args.schedule or ("barrier" if args.engine == "hf" else "pipelined"),
            max_in_flight=args.max_in_flight,
        )
    # FileExistsError: output of an earlier run; ValueError: --resume with changed input or settings;
    # OutputError: a part or the manifest could not be written (disk full, read-only)
    except (InputError, FileExistsError, ValueError, OutputError) as e:
        return report_error(e)
    finally:
        engine.close()
    print(format_summary(summary))
    if args.summary_json:
        try:
            write_json_atomic(args.summary_json, summary)
        except OSError as e:
            return report_error(OutputError(f"--summary-json {args.summary_json}: could not write: {e.strerror or e}"))
    stopped = failure_rate_error(summary)
    if stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return FAILURE_RATE_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
