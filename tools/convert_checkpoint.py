#!/usr/bin/env python
"""Convert Hugging Face Llama/Mistral weights to our megatron-core checkpoint and back (see docs/conversion.md).

hf-to-megatron --hf-dir HF --save DIR [--tensor-model-parallel-size N]
    DIR gets model.json (for --model), tokenizer/ and a checkpoint that tools/pretrain.py --load reads at any TP/PP.
megatron-to-hf --load DIR --hf-dir OUT [--model model.json] [--tokenizer-dir TOK]
    the latest checkpoint in DIR (converted or trained, any TP/PP) -> a directory transformers loads.
"""

import argparse
import os
import sys

from megatron_ipt.convert.hf_checkpoint import DTYPES, export_hf, import_hf
from megatron_ipt.errors import UserError
from megatron_ipt.io.atomic import check_writable_dir
from megatron_ipt.io.cli import report_error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="direction", required=True)
    to_megatron = sub.add_parser("hf-to-megatron", help="HF directory -> our checkpoint")
    to_megatron.add_argument("--hf-dir", required=True, help="config.json + model.safetensors (or sharded + index)")
    to_megatron.add_argument("--save", required=True, help="new (or empty) output directory")
    to_megatron.add_argument(
        "--tensor-model-parallel-size",
        type=int,
        default=1,
        help="pad the saved vocabulary rows for this TP (Megatron's rule); any TP loads the "
        "checkpoint (megatron-core reloads the embedding with another padding)",
    )
    to_megatron.add_argument(
        "--make-vocab-size-divisible-by",
        type=int,
        default=128,
        help="Megatron's padding multiple, also written to model.json for training",
    )
    to_megatron.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="default: bfloat16 if the HF config says so, else float32"
    )
    to_hf = sub.add_parser("megatron-to-hf", help="our checkpoint -> HF directory")
    to_hf.add_argument("--load", required=True, help="checkpoint directory (its latest committed iteration)")
    to_hf.add_argument("--hf-dir", required=True, help="new (or empty) output directory")
    to_hf.add_argument("--model", default=None, help="a preset or model JSON (default: LOAD/model.json)")
    to_hf.add_argument(
        "--tokenizer-dir",
        default=None,
        help="copy tokenizer files from here (default: the tokenizer/ beside the model JSON)",
    )
    to_hf.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: the checkpoint's dtype")
    args = parser.parse_args(argv)
    try:
        output = args.save if args.direction == "hf-to-megatron" else args.hf_dir
        check_writable_dir(os.path.dirname(os.path.abspath(output)))  # before minutes of conversion, not after
        if args.direction == "hf-to-megatron":
            import_hf(
                args.hf_dir, args.save, args.tensor_model_parallel_size, args.make_vocab_size_divisible_by, args.dtype
            )
        else:
            export_hf(args.load, args.hf_dir, args.model, args.tokenizer_dir, args.dtype)
    except UserError as error:  # ConversionError, TrainingInputError
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # no space left, unwritable output: one line naming the path
        return report_error(error, has_skip_flag=False)
    return 0


if __name__ == "__main__":  # required: dist_checkpointing's save spawns a Manager process that re-imports this file
    sys.exit(main())
