"""An ablation plan -> the stages that run it, each the existing tool as a user would run it.

RUN/plan.json                          the resolved plan (a rerun with another plan is refused)
RUN/inputs/synthesize.jsonl, rest.jsonl  the texts to synthesize (1 in round(1/convert_fraction)) and the rest
RUN/synth/<synthesizer>/               tools/synthesize.py (once per distinct synthesizer)
RUN/base/                              continual pre-training: the HF model converted once
RUN/corpus/<arm>/                      tools/build_corpus.py, every arm at the same token budget
RUN/data/<arm>_text_document.{bin,idx} tools/preprocess_data.py
RUN/tasks/                             tools/evaluate.py build-tasks on the held-out documents (or the plan's)
RUN/train/<arm>/seed<S>/               tools/pretrain.py (checkpoints; resumes from itself)
RUN/tensorboard/<arm>-seed<S>/         one TensorBoard run per arm x seed (training + evaluation scalars)
RUN/eval/<arm>/seed<S>/                tools/evaluate.py: report.json + predictions/<task>.jsonl
RUN/report/                            report.md, report.json, figures/*.png
RUN/stages/, RUN/logs/                 one marker (finished) and one log per stage
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional

from megatron_ipt.ablation.plan import Arm, Plan, PlanError
from megatron_ipt.ablation.stages import Stage, StageFailed, python_tool, read_marker, torchrun_tool
from megatron_ipt.io.atomic import write_atomic

CONSUMED = re.compile(r"iteration\s+(\d+)/\s*(\d+) \| consumed samples:\s+(\d+)")


class Paths:
    def __init__(self, run_dir: str):
        self.run = os.path.abspath(run_dir)

    def __getattr__(self, name):  # RUN/<name>
        return os.path.join(self.run, name)

    def synth(self, key: str) -> str:
        return os.path.join(self.run, "synth", key)

    def corpus(self, arm: str) -> str:
        return os.path.join(self.run, "corpus", arm)

    def data_prefix(self, arm: str) -> str:
        return os.path.join(self.run, "data", arm)

    def train(self, arm: str, seed: int) -> str:
        return os.path.join(self.run, "train", arm, f"seed{seed}")

    def tensorboard_run(self, arm: str, seed: int) -> str:
        return os.path.join(self.run, "tensorboard", f"{arm}-seed{seed}")

    def eval(self, arm: str, seed: int) -> str:
        return os.path.join(self.run, "eval", arm, f"seed{seed}")


def _tokenizer(plan: Plan, paths: Paths):
    """(type, model) of every run's tokenizer: continual pre-training uses the model's own, as the converter saved it."""
    if plan.model.hf_dir:
        return "HuggingFaceTokenizer", os.path.join(paths.base, "tokenizer")
    return plan.tokenizer_type, plan.tokenizer_model


def _tokenizer_flags(plan: Plan, paths: Paths) -> List[str]:
    kind, model = _tokenizer(plan, paths)
    return ["--tokenizer-type", kind] + (["--tokenizer-model", model] if model else [])


def _count_tokens(plan: Plan, paths: Paths, spec: str) -> int:
    """Tokens of the texts of a JSONL file/glob/directory, with the runs' tokenizer."""
    from megatron_ipt.corpus.reader import read_texts
    from megatron_ipt.io.jsonl import BadLines
    from megatron_ipt.tokenizers import TokenizerSpec

    texts = [t for _, t in read_texts(spec, plan.text_key, BadLines())]
    if not texts:
        return 0
    return sum(len(ids) for ids in TokenizerSpec(*_tokenizer(plan, paths)).build().encode_batch(texts))


def _model_flags(plan: Plan, paths: Paths) -> List[str]:
    if plan.model.hf_dir:
        return ["--model", os.path.join(paths.base, "model.json")]
    return (["--model", plan.model.preset] if plan.model.preset else []) + list(plan.model.args)


def _split_inputs(plan: Plan, paths: Paths) -> None:
    """Record i of the corpus (non-blank lines, in input order) is synthesized when i % shards == 0, else it stays
    raw: the paper's general setting converts 1/5 of the texts. Lines are copied as they are."""
    from megatron_ipt.io.inputs import Shard, expand_inputs, iter_lines

    shards = plan.synthesis_shards
    os.makedirs(paths.inputs, exist_ok=True)
    chosen, rest, i = [], [], 0
    for path in expand_inputs(plan.corpus):
        for _, _, raw in iter_lines(Shard(path)):
            if not raw.strip():
                continue
            line = raw.decode("utf-8").rstrip("\n") + "\n"
            (chosen if i % shards == 0 else rest).append(line)
            i += 1
    write_atomic(os.path.join(paths.inputs, "rest.jsonl"), rest)
    write_atomic(os.path.join(paths.inputs, "synthesize.jsonl"), chosen)


def _corpus_flags(plan: Plan, arm: Arm, paths: Paths, synth_key: str) -> List[str]:
    rest = os.path.join(paths.inputs, "rest.jsonl")
    flags = ["--recipe", "vanilla" if arm.kind == "vanilla" else "mix" if arm.kind == "mix" else arm.recipe]
    flags += ["--collections", paths.synth(synth_key)]
    if plan.synthesis_shards > 1:
        flags += ["--raw-input", rest, "--text-key", plan.text_key]
    data = plan.instruction_data or {}
    # The paper's from-scratch arms: Mix = raw + the instruction data; IPT = augmented + raw + the same tuning data
    # (the general recipe takes tuning data, not general instructions)
    if arm.kind == "mix" or (arm.kind == "ipt" and arm.recipe == "general"):
        if "tuning_data" in data:
            flags += ["--tuning-data", data["tuning_data"]]
    if arm.kind == "mix" and "general_instructions" in data:
        flags += ["--general-instructions", data["general_instructions"]]
    if arm.kind == "ipt" and arm.recipe == "general":
        flags += ["--convert-fraction", str(plan.convert_fraction)]
    if arm.kind == "ipt" and arm.recipe == "domain":
        flags += ["--general-instructions", data["general_instructions"]]
    return flags


def _check_corpus(plan: Plan, arm: Arm, paths: Paths) -> dict:
    """The built corpus holds the budget, and no text source had to be repeated more than max_epochs times to fill
    it (the arm's unique text is too small otherwise: name it and the most it can give)."""
    with open(os.path.join(paths.corpus(arm.name), "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    sources = summary["sources"]
    # build_corpus meets each target with whole documents: a budget smaller than a document leaves a source out,
    # and an IPT arm without its augmented texts would be a vanilla arm under another name
    empty = [k for k, s in sources.items() if s.get("target_tokens", 0) > 0 and s["documents"] == 0]
    if empty:
        raise StageFailed(
            f"arm {arm.name}: token_budget {plan.token_budget:,} is too small to hold one document of "
            f"{', '.join(empty)} (targets: "
            + ", ".join(f"{k} {sources[k]['target_tokens']:,.0f} tokens" for k in empty)
            + "); raise token_budget"
        )
    unique = sum(s["pool_tokens"] for s in sources.values())
    text_sources = {k: s for k, s in sources.items() if k in ("raw", "augmented") and s["pool_tokens"]}
    passes = max((s["tokens"] / s["pool_tokens"] for s in text_sources.values()), default=0.0)
    if passes > plan.max_epochs + 1e-9:
        # the most this arm gives at max_epochs passes over its texts, with the recipe's shares kept
        most = int(plan.token_budget * plan.max_epochs / passes)
        raise StageFailed(
            f"arm {arm.name}: token_budget {plan.token_budget:,} needs {passes:.2f} passes over its texts; at "
            f"max_epochs {plan.max_epochs:g} it gives at most {most:,} tokens (lower token_budget or raise max_epochs)"
        )
    return {
        "tokens": sum(s["tokens"] for s in sources.values()),
        "unique_tokens": unique,
        "passes_over_texts": round(passes, 4),
        "sources": {k: {"tokens": s["tokens"], "pool_tokens": s["pool_tokens"]} for k, s in sources.items()},
    }


def _check_training(plan: Plan, arm: Arm, seed: int, log: str) -> dict:
    """Tokens seen, as the run's own last log line says (consumed samples x sequence length)."""
    consumed = None
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = CONSUMED.search(line)
            if match and int(match.group(1)) == int(match.group(2)):
                consumed = int(match.group(3))
    if consumed is None:
        raise StageFailed(f"train/{arm.name}/seed{seed}: its log {log} has no final 'consumed samples' line")
    return {"consumed_samples": consumed, "tokens_seen": consumed * plan.seq_length}


def _synthesis_facts(paths: Paths, key: str) -> dict:
    """Cost of the synthesis from its summaries (one per attempt: a resumed run reports only what it did)."""
    directory = os.path.join(paths.synth(key) + ".summaries")
    usage: Dict[str, float] = {}
    engine = None
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                summary = json.load(f)
            engine = summary.get("engine", {}).get("engine", engine)
            for k, v in summary.get("usage", {}).items():
                if isinstance(v, (int, float)):
                    usage[k] = usage.get(k, 0) + v
            usage["seconds_total"] = usage.get("seconds_total", 0) + summary.get("seconds", 0)
            usage["texts"] = usage.get("texts", 0) + summary.get("texts", 0)
    return {"engine": engine, "usage": usage}


def build_stages(plan: Plan, run_dir: str, workers: int = 1) -> List[Stage]:
    paths = Paths(run_dir)
    stages: List[Stage] = []
    tok = _tokenizer_flags(plan, paths)
    layout = plan.layout
    nproc = layout.nproc_per_node
    quiet = {"PYTHONWARNINGS": "ignore"}  # megatron-core and torch warn about their own internals on every rank

    stages.append(
        Stage(
            "inputs",
            "inputs",
            lambda: _split_inputs(plan, paths),
            in_process=True,
            outputs=[paths.inputs],
        )
    )
    if plan.model.hf_dir:
        stages.append(
            Stage(
                "convert",
                "convert",
                lambda: python_tool(
                    "convert_checkpoint.py",
                    "hf-to-megatron",
                    "--hf-dir",
                    plan.model.hf_dir,
                    "--save",
                    paths.base,
                    "--tensor-model-parallel-size",
                    str(layout.tensor_model_parallel_size),
                ),
                outputs=[paths.base],
            )
        )
    # synthesis: once per distinct synthesizer; every plan has an ipt arm, and the first synthesizer's collections
    # carry the texts for the baselines too
    synth_keys = list(plan.synthesizers)
    for key, synth in plan.synthesizers.items():
        summaries = paths.synth(key) + ".summaries"

        def synth_command(key=key, synth=synth, summaries=summaries):
            attempt = len(os.listdir(summaries)) if os.path.isdir(summaries) else 0
            command = python_tool(
                "synthesize.py",
                "--input",
                os.path.join(paths.inputs, "synthesize.jsonl"),
                "--output-dir",
                paths.synth(key),
                "--text-key",
                plan.text_key,
                "--engine",
                synth.engine,
                "--rounds",
                str(synth.rounds),
                "--summary-json",
                os.path.join(summaries, f"attempt{attempt:03d}.json"),
                *synth.args,
            )
            if os.path.isdir(paths.synth(key)) and os.listdir(paths.synth(key)):
                command.append("--resume")
            return command

        stages.append(
            Stage(
                f"synthesize/{key}",
                "synthesize",
                synth_command,
                outputs=[paths.synth(key), summaries],
                resumes=True,
                check=lambda key=key: _synthesis_facts(paths, key),
            )
        )
    for arm in plan.arms:
        key = arm.synthesizer.key() if arm.synthesizer else synth_keys[0]
        stages.append(
            Stage(
                f"corpus/{arm.name}",
                "corpus",
                lambda arm=arm, key=key: python_tool(
                    "build_corpus.py",
                    *_corpus_flags(plan, arm, paths, key),
                    "--token-budget",
                    str(plan.token_budget),
                    *tok,
                    "--output-dir",
                    paths.corpus(arm.name),
                    "--overwrite",
                ),
                outputs=[paths.corpus(arm.name)],
                check=lambda arm=arm: _check_corpus(plan, arm, paths),
            )
        )
        prefix = paths.data_prefix(arm.name)
        stages.append(
            Stage(
                f"pack/{arm.name}",
                "pack",
                lambda arm=arm, prefix=prefix: python_tool(
                    "preprocess_data.py",
                    "--input",
                    os.path.join(paths.corpus(arm.name), "corpus-*.jsonl"),
                    "--output-prefix",
                    prefix,
                    "--json-keys",
                    "text",
                    *tok,
                    "--append-eod",
                    "--workers",
                    str(workers),
                ),
                outputs=[prefix + "_text_document.bin", prefix + "_text_document.idx"],
            )
        )
    tasks_dir = plan.tasks or paths.tasks
    if not plan.tasks:
        stages.append(
            Stage(
                "tasks",
                "tasks",
                lambda: python_tool(
                    "evaluate.py",
                    "build-tasks",
                    "--input",
                    plan.held_out,
                    "--text-key",
                    plan.text_key,
                    "--output-dir",
                    paths.tasks,
                    *plan.build_tasks_args,
                ),
                outputs=[paths.tasks],
            )
        )
    save_interval = (
        [] if "--save-interval" in plan.pretrain_args else ["--save-interval", str(max(1, plan.train_iters // 4))]
    )
    for arm in plan.arms:
        for seed in plan.seeds:
            save = paths.train(arm.name, seed)
            name = f"train/{arm.name}/seed{seed}"

            def train_command(arm=arm, seed=seed, save=save):
                load = ["--load", save]
                if plan.model.hf_dir and not os.path.exists(os.path.join(save, "latest_checkpointed_iteration.txt")):
                    load = ["--load", paths.base, "--no-load-optim", "--no-load-rng"]
                return torchrun_tool(
                    nproc,
                    "pretrain.py",
                    *_model_flags(plan, paths),
                    "--seq-length",
                    str(plan.seq_length),
                    "--micro-batch-size",
                    str(plan.micro_batch_size),
                    "--global-batch-size",
                    str(plan.global_batch_size),
                    "--train-iters",
                    str(plan.train_iters),
                    "--seed",
                    str(seed),
                    "--tensor-model-parallel-size",
                    str(layout.tensor_model_parallel_size),
                    "--pipeline-model-parallel-size",
                    str(layout.pipeline_model_parallel_size),
                    "--data-path",
                    paths.data_prefix(arm.name) + "_text_document",
                    "--split",
                    plan.split,
                    *tok,
                    "--save",
                    save,
                    *load,
                    *save_interval,
                    "--tensorboard-dir",
                    paths.tensorboard_run(arm.name, seed),
                    *plan.pretrain_args,
                )

            log = os.path.join(paths.logs, name.replace("/", "-") + ".log")
            stages.append(
                Stage(
                    name,
                    "train",
                    train_command,
                    outputs=[save, paths.tensorboard_run(arm.name, seed)],
                    resumes=True,
                    check=lambda arm=arm, seed=seed, log=log: _check_training(plan, arm, seed, log),
                    env=quiet,
                )
            )
    for arm in plan.arms:
        for seed in plan.seeds:
            out = paths.eval(arm.name, seed)
            stages.append(
                Stage(
                    f"eval/{arm.name}/seed{seed}",
                    "eval",
                    lambda arm=arm, seed=seed, out=out: torchrun_tool(
                        nproc,
                        "evaluate.py",
                        "--load",
                        paths.train(arm.name, seed),
                        "--tensor-model-parallel-size",
                        str(layout.tensor_model_parallel_size),
                        *tok,
                        "--tasks",
                        tasks_dir,
                        "--held-out-text",
                        plan.held_out,
                        "--held-out-text-key",
                        plan.text_key,
                        "--output",
                        os.path.join(out, "report.json"),
                        "--predictions-dir",
                        os.path.join(out, "predictions"),
                        "--tensorboard-dir",
                        paths.tensorboard_run(arm.name, seed),
                        *plan.evaluate_args,
                    ),
                    outputs=[out],
                    env=quiet,
                )
            )
    return stages


def report_inputs(plan: Plan, run_dir: str, stages: List[Stage]):
    """What the report needs beyond the per-run evaluation files: read from the stages' markers."""
    from megatron_ipt.ablation.report import ReportInputs, RunTokens, SynthesisCost

    paths = Paths(run_dir)
    markers = {s.name: read_marker(run_dir, s) or {} for s in stages}
    tokens = {
        arm.name: {
            seed: RunTokens(markers[f"train/{arm.name}/seed{seed}"]["tokens_seen"], plan.tokens_per_iteration)
            for seed in plan.seeds
        }
        for arm in plan.arms
    }
    synthesis = {}
    # the texts given to the synthesizer (every synthesizer gets the same ones): the cost per billion raw tokens
    raw_tokens = _count_tokens(plan, paths, os.path.join(paths.inputs, "synthesize.jsonl"))
    for arm in plan.arms:
        if arm.kind != "ipt":
            continue
        facts = markers.get(f"synthesize/{arm.synthesizer.key()}", {})
        usage = facts.get("usage", {})
        if raw_tokens:
            synthesis[arm.name] = SynthesisCost(
                engine=facts.get("engine") or arm.synthesizer.engine,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                generated_tokens=int(usage.get("generated_tokens", 0)),
                engine_seconds=float(usage.get("seconds", 0.0)),
                raw_tokens=raw_tokens,
                gpus=_synthesis_gpus(arm.synthesizer),
            )
    seconds: Dict[str, float] = {}
    for s in stages:
        seconds[s.kind] = seconds.get(s.kind, 0.0) + float(markers[s.name].get("seconds", 0.0))
    return ReportInputs(
        arms=tuple(a.name for a in plan.arms),
        ipt_arms=tuple(a.name for a in plan.arms if a.kind == "ipt"),
        baselines=tuple(a.name for a in plan.arms if a.kind != "ipt"),
        seeds=tuple(plan.seeds),
        tokens=tokens,
        synthesis=synthesis,
        stage_seconds=seconds,
    )


def _synthesis_gpus(synth) -> int:
    """GPUs an engine held: vLLM's --tensor-parallel-size (1 by default); 0 for CPU engines and remote servers."""
    if synth.engine != "vllm":
        return 0
    value = None
    for i, a in enumerate(synth.args):
        if a == "--tensor-parallel-size" and i + 1 < len(synth.args):
            value = synth.args[i + 1]
    return int(value or 1)


def check_budget_reachable(plan: Plan) -> Optional[int]:
    """Before any work: the vanilla arm (the raw texts alone: the smallest of the arms) must reach the budget in
    max_epochs passes. Counts the corpus' tokens with the plan's tokenizer (skipped, returning None, above 1 GiB or
    for continual pre-training before the model's tokenizer is converted; the corpus stage checks every arm again)."""
    if plan.model.hf_dir or not any(a.kind == "vanilla" for a in plan.arms):
        return None
    from megatron_ipt.io.inputs import expand_inputs

    files = expand_inputs(plan.corpus)
    if sum(os.path.getsize(f) for f in files) > 1 << 30:
        return None
    tokens = _count_tokens(plan, Paths("."), plan.corpus)  # from scratch: no path of the run directory is read
    most = int(tokens * plan.max_epochs)
    if most < plan.token_budget:
        name = next(a.name for a in plan.arms if a.kind == "vanilla")
        raise PlanError(
            f"token_budget: arm {name} (the raw texts alone, {tokens:,} tokens) gives at most {most:,} tokens in "
            f"max_epochs {plan.max_epochs:g} passes, less than token_budget {plan.token_budget:,} "
            "(lower token_budget or raise max_epochs)"
        )
    return tokens
