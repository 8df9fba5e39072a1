"""Pre-train a GPT model with megatron-core. Launch with torchrun; flags follow Megatron-LM (see --help)."""

import os
import sys

from megatron_ipt.training import config, loop


def main(argv=None) -> int:
    args = config.build_parser().parse_args(argv)
    training = config.TrainingConfig.from_args(args)
    if training.data.tokenizer is None:
        raise SystemExit(f"--tokenizer-model is required for --tokenizer-type {args.tokenizer_type}")
    tokenizer = training.data.tokenizer.build()
    try:
        result = loop.train(training, tokenizer)
    except loop.NonFiniteLoss as error:
        print(f"error: {error}; exiting (pass --skip-nonfinite-loss to skip such steps)", file=sys.stderr, flush=True)
        return 2
    finally:
        from megatron_ipt.training import parallel

        parallel.destroy()
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"training done at iteration {result['iteration']}", flush=True)
    return 0


if __name__ == "__main__":  # required: dist_checkpointing's save spawns a Manager process that re-imports this file
    sys.exit(main())
