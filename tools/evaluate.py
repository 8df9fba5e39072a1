"""Score a model on task files (tools/evaluate.py [run] ...), or build task files from held-out text
(tools/evaluate.py build-tasks ...). See megatron_ipt/evaluation and the README's "Evaluation" section.

Our checkpoint: `--load DIR` plus the model flags of tools/pretrain.py (--model, --num-layers, ...,
--tokenizer-type, --tokenizer-model, --tensor-model-parallel-size; launch with torchrun for TP/DP > 1).
A Hugging Face directory: `--hf-model DIR`.
"""

import argparse
import sys


def build_tasks_main(argv) -> int:
    from megatron_ipt.evaluation.build import build_tasks, read_documents
    from megatron_ipt.io.cli import report_error
    from megatron_ipt.io.inputs import InputError

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
    p.add_argument("--max-items", type=int, default=None, help="items per task (default: one per usable document)")
    a = p.parse_args(argv)
    try:
        texts = read_documents(a.input, a.text_key)
        summary = build_tasks(
            texts, a.output_dir, a.seed, a.num_options, a.max_passage_words, a.max_sentence_words, a.max_items, a.input
        )
    except (InputError, ValueError) as e:
        return report_error(e, has_skip_flag=False)
    print(
        f"{summary['documents']} documents ({summary['skipped_documents']} without two consecutive short sentences skipped) -> "
        + ", ".join(f"{name} {n} items" for name, n in summary["items"].items())
        + f" in {a.output_dir}"
    )
    return 0


def run_main(argv) -> int:
    from megatron_ipt.evaluation.runner import MAX_NEW_TOKENS, run

    p = argparse.ArgumentParser(
        prog="tools/evaluate.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--tasks", nargs="+", required=True, help="task files, globs or directories of *.jsonl")
    p.add_argument("--hf-model", default=None, help="a Hugging Face model directory (else --load DIR + model flags)")
    p.add_argument(
        "--hf-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on GPU, float32 on CPU",
    )
    p.add_argument("--micro-batch-size", type=int, default=8, help="sequences per forward pass")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="longest sequence scored (default: min(2048, the model's max positions)); prompts are cut on the left",
    )
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument(
        "--start-token",
        default="auto",
        choices=["auto", "bos", "eod", "none"],
        help="token put before every prompt; auto: what the tokenizer/packer puts at a document's start",
    )
    p.add_argument("--limit", type=int, default=None, help="first N items of each task")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip (and count) bad task lines instead of stopping")
    p.add_argument("--output", default=None, help="JSON report path")
    p.add_argument("--predictions-dir", default=None, help="write per-item predictions as <task>.jsonl here")
    p.add_argument("--tensorboard-dir", default=None, help="add eval/<task>/<metric> scalars to this run's TensorBoard")
    p.add_argument(
        "--step", type=int, default=None, help="TensorBoard step (default: the checkpoint's iteration, or 0)"
    )
    opts, model_argv = p.parse_known_args(argv)
    return run(opts, model_argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build-tasks"]:
        return build_tasks_main(argv[1:])
    return run_main(argv[1:] if argv[:1] == ["run"] else argv)


if __name__ == "__main__":  # required: checkpoint I/O may start processes that re-import this file
    sys.exit(main())
