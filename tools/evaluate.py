"""Score a model on task files (tools/evaluate.py [run] ...), build task files from held-out text
(tools/evaluate.py build-tasks ...), or export them as lm-evaluation-harness tasks
(tools/evaluate.py export-lm-eval ...). See megatron_ipt/evaluation and docs/evaluation.md.

Our checkpoint: `--load DIR` plus the model flags of tools/pretrain.py (--model, --num-layers, ...,
--tokenizer-type, --tokenizer-model, --tensor-model-parallel-size; launch with torchrun for TP/DP > 1).
A Hugging Face directory: `--hf-model DIR`.
"""

import argparse
import sys

from megatron_ipt import process

if __name__ == "__main__":  # not in the processes multiprocessing spawns from this module (their parent is the rank)
    process.die_with_launcher()  # before the slow imports: a rank must not outlive a torchrun killed at start-up

# tools/pretrain.py's parallelism and precision flags that evaluation does not take (context parallelism, gradient
# reduction, loss fusion, kernel choices): its model is built with their defaults
TRAINING_ONLY_PARALLEL = (
    "context_parallel_size",
    "cp_comm_type",
    "distributed_timeout_minutes",
    "grad_reduce_in_bf16",
)
TRAINING_ONLY_PRECISION = ("attention_backend", "fp8_param_gather", "cross_entropy_loss_fusion", "deterministic_mode")


def build_tasks_main(argv) -> int:
    from megatron_ipt.errors import UserError
    from megatron_ipt.evaluation.build_tasks import build_tasks, read_documents
    from megatron_ipt.io.atomic import check_writable_dir
    from megatron_ipt.io.cli import report_error

    p = argparse.ArgumentParser(
        prog="tools/evaluate.py build-tasks",
        description="Build reading-comprehension task files from held-out text (JSONL).",
    )
    p.add_argument("--input", required=True, help="JSONL file, glob or directory of held-out documents")
    p.add_argument("--output-dir", "--output", dest="output_dir", required=True)
    p.add_argument("--text-key", default="text")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--num-options", type=int, default=4)
    p.add_argument("--max-passage-words", type=int, default=120)
    p.add_argument("--max-sentence-words", type=int, default=40, help="a longer sentence ends a passage")
    p.add_argument(
        "--passages-per-document",
        type=int,
        default=1,
        help="items from up to this many non-overlapping passages of each document (more items per held-out text)",
    )
    p.add_argument("--max-items", type=int, default=None, help="items per task (default: one per usable passage)")
    a = p.parse_args(argv)
    try:
        check_writable_dir(a.output_dir)  # before the work, not after it
        texts = read_documents(a.input, a.text_key)
        summary = build_tasks(
            texts,
            a.output_dir,
            a.seed,
            a.num_options,
            a.max_passage_words,
            a.max_sentence_words,
            a.max_items,
            a.input,
            a.passages_per_document,
        )
    except (UserError, OSError) as e:  # OSError: no space left, unwritable output (named)
        return report_error(e, has_skip_flag=False)
    print(
        f"{summary['documents']} documents ({summary['skipped_documents']} without two consecutive short sentences skipped) -> "
        + ", ".join(f"{name} {n} items" for name, n in summary["items"].items())
        + f" in {a.output_dir}"
    )
    return 0


def export_lm_eval_main(argv) -> int:
    from megatron_ipt.errors import UserError
    from megatron_ipt.evaluation.lm_eval_export import export_tasks
    from megatron_ipt.evaluation.scoring import MAX_NEW_TOKENS
    from megatron_ipt.evaluation.tasks import load_tasks
    from megatron_ipt.io.cli import report_error

    p = argparse.ArgumentParser(
        prog="tools/evaluate.py export-lm-eval",
        description="Write each task file as an lm-evaluation-harness task: <task>.yaml + <task>.jsonl "
        "(run them with lm_eval --include_path OUTPUT_DIR --tasks megatron_ipt).",
    )
    p.add_argument("--tasks", nargs="+", required=True, help="task files, globs or directories of *.jsonl")
    p.add_argument(
        "--output-dir",
        required=True,
        help="new, empty, or an earlier export (replaced as a whole); the YAML files name their JSONL by absolute path",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="generation tasks: lm-eval's max_gen_toks"
    )
    p.add_argument("--skip-bad-lines", action="store_true", help="skip (and count) bad task lines instead of stopping")
    a = p.parse_args(argv)
    try:
        tasks = load_tasks(a.tasks, a.skip_bad_lines)
        export_tasks(tasks, a.output_dir, a.max_new_tokens)
    except (UserError, OSError) as e:
        return report_error(e)
    for task in tasks:
        skipped = f" ({sum(task.skipped.values())} bad lines skipped)" if task.skipped else ""
        print(f"{task.name}: {len(task.items)} {task.kind} items{skipped}")
    print(f"lm-eval tasks in {a.output_dir}: lm_eval --include_path {a.output_dir} --tasks megatron_ipt ...")
    return 0


def run_main(argv) -> int:
    from megatron_ipt.evaluation.scoring import MAX_NEW_TOKENS, run
    from megatron_ipt.tokenizers import add_tokenizer_args
    from megatron_ipt.training import config
    from megatron_ipt.training.model_config import add_model_args

    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    own.add_argument("--tasks", nargs="+", default=[], help="task files, globs or directories of *.jsonl")
    own.add_argument(
        "--held-out-text",
        default=None,
        help="JSONL documents (file, glob or directory) whose perplexity is reported as the task held_out_text",
    )
    own.add_argument("--held-out-text-key", default="text", help="the documents' text key")
    own.add_argument("--hf-model", default=None, help="a Hugging Face model directory (else --load DIR + model flags)")
    own.add_argument(
        "--hf-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on GPU, float32 on CPU",
    )
    own.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward pass")
    own.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest sequence scored (default: min(2048, the model's max positions)); prompts are cut on the left",
    )
    own.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    own.add_argument(
        "--start-token",
        default="auto",
        choices=["auto", "bos", "eod", "none"],
        help="token put before every prompt; auto: what the tokenizer/packer puts at a document's start",
    )
    own.add_argument("--limit", type=int, default=None, help="first N items of each task")
    own.add_argument(
        "--skip-bad-lines", action="store_true", help="skip (and count) bad task lines instead of stopping"
    )
    own.add_argument("--output", default=None, help="JSON report path")
    own.add_argument("--predictions-dir", default=None, help="write per-item predictions as <task>.jsonl here")
    own.add_argument(
        "--tensorboard-dir", default=None, help="add eval/<task>/<metric> scalars to this run's TensorBoard"
    )
    own.add_argument(
        "--step", type=int, default=None, help="TensorBoard step (default: the checkpoint's iteration, or 0)"
    )
    # our checkpoint: --load and tools/pretrain.py's flags for the model it holds
    checkpoint = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    checkpoint.add_argument(
        "--load", default=None, help="checkpoint directory (its model.json and tokenizer/ are used when present)"
    )
    add_model_args(checkpoint)
    config.add_parallel_args(checkpoint, exclude=TRAINING_ONLY_PARALLEL)
    config.add_precision_args(checkpoint, exclude=TRAINING_ONLY_PRECISION)
    add_tokenizer_args(checkpoint, required=False)
    p = argparse.ArgumentParser(
        prog="tools/evaluate.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        parents=[own, checkpoint],
    )
    opts = p.parse_args(argv)
    if not opts.tasks and not opts.held_out_text:
        p.error("nothing to evaluate: give --tasks, --held-out-text or both")
    if opts.hf_model:
        _, checkpoint_flags = own.parse_known_args(argv)
        if checkpoint_flags:
            raise SystemExit(f"unrecognized arguments with --hf-model: {' '.join(checkpoint_flags)}")

    def open_model():
        if opts.hf_model:
            from megatron_ipt.evaluation.hf_backend import HFModel

            return HFModel(opts.hf_model, opts.micro_batch_size, opts.max_length, opts.start_token, opts.hf_dtype)
        from megatron_ipt.errors import UserError
        from megatron_ipt.evaluation.megatron_backend import CheckpointSpec, MegatronModel

        spec = CheckpointSpec.from_args(opts)
        try:
            return MegatronModel(spec, opts.micro_batch_size, opts.max_length, opts.start_token)
        except UserError as error:  # a corrupt, unsafe or missing checkpoint file: one line naming it
            raise SystemExit(f"error: {error}") from None

    return run(
        open_model,
        opts.tasks,
        skip_bad_lines=opts.skip_bad_lines,
        limit=opts.limit,
        max_new_tokens=opts.max_new_tokens,
        output=opts.output,
        predictions_dir=opts.predictions_dir,
        tensorboard_dir=opts.tensorboard_dir,
        step=opts.step,
        held_out_text=opts.held_out_text,
        held_out_text_key=opts.held_out_text_key,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build-tasks"]:
        return build_tasks_main(argv[1:])
    if argv[:1] == ["export-lm-eval"]:
        return export_lm_eval_main(argv[1:])
    return run_main(argv[1:] if argv[:1] == ["run"] else argv)


if __name__ == "__main__":  # required: checkpoint I/O may start processes that re-import this file
    sys.exit(main())
