"""Pre-train a GPT model with megatron-core. Launch with torchrun; flags follow Megatron-LM (see --help)."""

import os
import sys

from megatron_ipt import process

if __name__ == "__main__":  # not in the processes multiprocessing spawns from this module (their parent is the rank)
    process.die_with_launcher()  # before the slow imports: a rank must not outlive a torchrun killed at start-up

from megatron_ipt.errors import UserError  # noqa: E402
from megatron_ipt.training import config, loop, models, preflight  # noqa: E402


def main(argv=None) -> int:
    try:
        return _main(argv)
    except UserError as error:  # a bad input, checkpoint, output or setup: one line, once (preflight.report)
        return preflight.report(error)
    except SystemExit as error:  # a flag error: the same, instead of once per rank
        if not isinstance(error.code, str):
            raise
        return preflight.report(error)


def _main(argv) -> int:
    args = config.build_parser().parse_args(argv)
    training = config.TrainingConfig.from_args(args)
    data = training.data
    if data.mock_data and data.data_path:
        raise SystemExit("--mock-data trains on synthetic tokens: give it without --data-path")
    if not data.mock_data and not data.data_path:
        raise SystemExit("--data-path is required (a prefix, or a blend 'w1 prefix1 w2 prefix2'), or --mock-data")
    if data.tokenizer is None and not data.mock_data:
        raise SystemExit(
            "a tokenizer is required: --tokenizer-model (or --vocab-file and --merge-file), or --mock-data"
        )
    # what this machine cannot build (no Transformer Engine for FP8, CP, ...) stops here, in one line (UserError)
    models.check_buildable(training.model, training.parallel, training.precision)
    if data.loss_mask_data:  # tuning data: its files checked on every rank before anything is built
        from megatron_ipt.training import loss_mask_data

        if data.mock_data:
            raise SystemExit("--loss-mask-data reads a loss mask beside each --data-path prefix: not with --mock-data")
        loss_mask_data.check_prefixes(data.data_path, training.model.seq_length)
    try:  # an unreadable tokenizer file: one line naming it (a corrupt one is a UserError of the tokenizers already)
        tokenizer = data.tokenizer.build() if data.tokenizer else None  # None: --mock-data's ids below the vocab size
    except OSError as error:
        from megatron_ipt.io.cli import describe_error
        from megatron_ipt.training.errors import TrainingInputError

        raise TrainingInputError(describe_error(error)) from None
    run = _check_inputs_first(training)
    if training.checkpoint.save:
        # dist_checkpointing's writer keeps a multiprocessing Manager (spawned at the first save, in the rank's
        # session) that would outlive a killed rank: start it now, bound to the rank's life (and deaf to SIGTERM)
        from megatron_ipt.training.callbacks import preemption

        preemption.shield_checkpoint_writer()
    try:
        result = loop.train(training, tokenizer)
    except loop.NonFiniteLoss as error:
        print(f"error: {error}; exiting (pass --skip-nonfinite-loss to skip such steps)", file=sys.stderr, flush=True)
        return 2
    finally:
        from megatron_ipt.training import parallel

        parallel.destroy()
    if int(os.environ.get("RANK", 0)) == 0 and result["iteration"] >= run.train_iters:  # an early exit said why
        print(f"training done at iteration {result['iteration']}", flush=True)
    return 0


def _check_inputs_first(training):
    """What can be checked before the model is built (minutes on a large model), with the data-parallel size from
    the launcher's WORLD_SIZE, as megatron's process groups will make it: the outputs can be written, each dataset
    is sound (its token ids are scanned by one rank per node, LOCAL_RANK 0, and cached), and the split guard.
    Returns the resolved config."""
    from megatron_ipt.training import datasets

    p = training.parallel
    model_parallel = p.tensor_model_parallel_size * p.pipeline_model_parallel_size
    run = training.resolve(max(1, int(os.environ.get("WORLD_SIZE", 1)) // model_parallel))
    preflight.check_outputs(training)
    datasets.check_data(run, scan_ids=int(os.environ.get("LOCAL_RANK", 0)) == 0)
    datasets.check_split(run)
    return run


if __name__ == "__main__":  # required: dist_checkpointing's save spawns a Manager process that re-imports this file
    sys.exit(main())
