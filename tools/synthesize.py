"""Raw texts (JSONL) -> instruction-response collections (megatron_ipt/formats/records.py). See docs/synthesis.md.

    python tools/synthesize.py --input 'data/*.jsonl' --output-dir out/ --engine vllm \\
        --model instruction-pretrain/instruction-synthesizer --rounds 2
"""

import argparse
import logging
import sys

from megatron_ipt.errors import UserError
from megatron_ipt.flags import add_flags, config_from_args
from megatron_ipt.io.atomic import write_json_atomic
from megatron_ipt.io.cli import report_error
from megatron_ipt.synthesis.config import SynthesisConfig
from megatron_ipt.synthesis.engines import build_engine, engine_settings, settings_class
from megatron_ipt.synthesis.manifest import OutputError, check_output_dir
from megatron_ipt.synthesis.runner import FAILURE_RATE_EXIT, Progress, failure_rate_error, format_summary, run
from megatron_ipt.tokenizers import TokenizerSpec, add_tokenizer_args

# Every engine, in the order --help lists their flag groups (the rules engine has no flags of its own).
HELP_ORDER = ("vllm", "openai", "hf", "rules")


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(ap, SynthesisConfig)
    add_tokenizer_args(
        ap,
        required=False,
        title="length-guard tokenizer (rules/openai engines; hf and vllm use the model's own)",
        model_help="a tokenizer.json, HF directory, SentencePiece .model or .tiktoken file to count prompt tokens "
        "for the length guard (default: words x1.5), counted without special tokens: a prompt carries its own <s>; "
        "--tokenizer is the same flag",
        model_aliases=("--tokenizer",),
    )
    for name in HELP_ORDER:
        add_flags(ap, settings_class(name))
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # the engine's settings are the flags of its settings class's fields, the model settings among them
    values = dict(vars(args), tokenizer=TokenizerSpec.from_args(args))
    try:
        config = config_from_args(SynthesisConfig, args)
    except UserError as e:  # flags out of range (--shard-index, --rounds, --max-failure-rate ...)
        return report_error(e)
    try:  # before a model loads or a server is asked: a run that could not write its output stops at once
        check_output_dir(config.output_dir)
    except UserError as e:  # OutputError
        return report_error(e)
    try:
        engine = build_engine(config.engine, **engine_settings(config.engine, values))
    except (UserError, FileNotFoundError) as e:  # missing vLLM, unreachable server, bad flags, no tokenizer file
        return report_error(e)
    try:
        summary = run(config, engine, progress=lambda total: Progress(total, config.log_interval))
    # FileExistsError: output of an earlier run; ConfigError: --resume with changed input or settings;
    # OutputError: a part or the manifest could not be written (disk full, read-only); InputError
    except (UserError, FileExistsError) as e:
        return report_error(e)
    finally:
        engine.close()
    print(format_summary(summary))
    if config.summary_json:
        try:
            write_json_atomic(config.summary_json, summary)
        except OSError as e:
            return report_error(
                OutputError(f"--summary-json {config.summary_json}: could not write: {e.strerror or e}")
            )
    stopped = failure_rate_error(summary)
    if stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return FAILURE_RATE_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
