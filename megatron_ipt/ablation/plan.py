"""The ablation plan: what tools/ablate.py compares, read from a YAML/JSON file (+ `--set key=value` overrides),
checked in full before any work starts, and resolved (paths absolute, defaults filled, derived values computed)
into the `plan.json` written in the run directory.

A plan names the raw corpus and the held-out documents, the synthesizer, the arms, ONE token budget that every arm
trains on, the model (a preset / Megatron flags from scratch, or a Hugging Face directory for continual
pre-training), the seeds and the parallel layout. docs/ablation.md lists every key.

Arms. `vanilla`: the raw texts only. `mix`: the raw texts + `instruction_data` (the paper's Mix baseline: raw
corpus + the instruction data itself, not tied to the texts). `ipt`: Instruction Pre-Training by the `general`
recipe (a `convert_fraction` of the texts synthesized into instruction-augmented texts, the rest raw, +
`instruction_data` when given, as the paper's from-scratch setting) or the `domain` recipe (every text
synthesized, + general instructions 1:1 by tokens). An arm is a name (`vanilla`, `mix`, `ipt`) or a mapping
`{name, kind, recipe, synthesizer}`, so several IPT arms can compare synthesizers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from megatron_ipt.errors import UserError

KINDS = ("vanilla", "mix", "ipt")
RECIPES = ("general", "domain")
ENGINES_WITH_MODEL = ("vllm", "hf")  # the openai engine names a server's model; rules needs none
# What the ablation itself sets on every training run (so arms stay comparable): refused in `pretrain_args`.
OWNED_PRETRAIN_FLAGS = (
    "--train-iters",
    "--train-samples",
    "--seed",
    "--save",
    "--load",
    "--data-path",
    "--data-args-path",
    "--tensorboard-dir",
    "--seq-length",
    "--micro-batch-size",
    "--global-batch-size",
    "--tensor-model-parallel-size",
    "--pipeline-model-parallel-size",
    "--tokenizer-type",
    "--tokenizer-model",
    "--split",
    "--model",
    "--mock-data",
)
OWNED_EVALUATE_FLAGS = ("--load", "--tasks", "--output", "--predictions-dir", "--tensorboard-dir", "--held-out-text")


class PlanError(UserError, ValueError):
    """A plan that cannot run: one line naming the plan file and the key."""


@dataclass(frozen=True)
class Synthesizer:
    """A tools/synthesize.py run: `--engine`, `--rounds`, and any other flags (e.g. --model, --base-url)."""

    engine: str = "rules"
    rounds: int = 2
    args: List[str] = field(default_factory=list)

    @property
    def model(self) -> Optional[str]:
        return _flag_value(self.args, "--model")

    def key(self) -> str:
        """A short stable name for the synthesis stage (two arms with the same synthesizer share it)."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.engine}-r{self.rounds}-{digest}"


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # vanilla | mix | ipt
    recipe: Optional[str] = None  # ipt: general | domain
    synthesizer: Optional[Synthesizer] = None  # ipt only


@dataclass(frozen=True)
class Layout:
    nproc_per_node: int = 1
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1

    @property
    def data_parallel_size(self) -> int:
        return self.nproc_per_node // (self.tensor_model_parallel_size * self.pipeline_model_parallel_size)


@dataclass(frozen=True)
class Model:
    """From scratch: `preset` (a tools/pretrain.py preset or model JSON) and/or Megatron model flags in `args`.
    Continual: `hf_dir`, converted once with tools/convert_checkpoint.py and loaded by every run."""

    preset: Optional[str] = None
    args: List[str] = field(default_factory=list)
    hf_dir: Optional[str] = None


@dataclass(frozen=True)
class Plan:
    corpus: str
    held_out: str
    token_budget: int
    arms: List[Arm]
    model: Model
    seq_length: int
    micro_batch_size: int
    global_batch_size: int
    tokenizer_type: Optional[str] = None
    tokenizer_model: Optional[str] = None
    text_key: str = "text"
    tasks: Optional[str] = None
    build_tasks_args: List[str] = field(default_factory=list)
    synthesizer: Synthesizer = field(default_factory=Synthesizer)
    convert_fraction: float = 0.2
    instruction_data: Optional[Dict[str, str]] = None  # {"tuning_data": path} or {"general_instructions": path}
    max_epochs: float = 1.0
    split: str = "98,2,0"
    pretrain_args: List[str] = field(default_factory=list)
    evaluate_args: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    layout: Layout = field(default_factory=Layout)

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def tokens_per_iteration(self) -> int:
        return self.global_batch_size * self.seq_length

    @property
    def train_iters(self) -> int:
        """Whole global batches within the budget: every arm sees exactly train_iters x tokens_per_iteration."""
        return self.token_budget // self.tokens_per_iteration

    @property
    def synthesizers(self) -> Dict[str, Synthesizer]:
        """Each distinct synthesizer of the IPT arms, by its stage key, in arm order."""
        out: Dict[str, Synthesizer] = {}
        for arm in self.arms:
            if arm.synthesizer is not None:
                out.setdefault(arm.synthesizer.key(), arm.synthesizer)
        return out

    @property
    def synthesis_shards(self) -> int:
        """general: synthesize 1 of round(1/convert_fraction) shards of the corpus (the paper converts 1/5), the
        rest stays raw; domain-only plans synthesize every text."""
        if all(a.recipe == "domain" for a in self.arms if a.kind == "ipt"):
            return 1
        return max(1, round(1 / self.convert_fraction))

    def to_json(self) -> dict:
        out = asdict(self)
        out["derived"] = {
            "tokens_per_iteration": self.tokens_per_iteration,
            "train_iters": self.train_iters,
            "tokens_seen_per_run": self.train_iters * self.tokens_per_iteration,
            "data_parallel_size": self.layout.data_parallel_size,
            "synthesis_shards": self.synthesis_shards,
        }
        return out


# -- reading -------------------------------------------------------------------------------------------------

# The plan file's keys are the Plan's fields (the tokenizer's two are one mapping there); required = no default.
TOP_KEYS = {f.name for f in fields(Plan) if not f.name.startswith("tokenizer_")} | {"tokenizer"}
REQUIRED = tuple(f.name for f in fields(Plan) if f.default is MISSING and f.default_factory is MISSING)
SUB_KEYS = {
    "tokenizer": {"type", "model"},
    "synthesizer": {"engine", "rounds", "args"},
    "model": {"preset", "args", "hf_dir"},
    "layout": {"nproc_per_node", "tensor_model_parallel_size", "pipeline_model_parallel_size"},
    "instruction_data": {"tuning_data", "general_instructions"},
    "arm": {"name", "kind", "recipe", "synthesizer"},
}


def read_plan_file(path: str) -> dict:
    """A YAML or JSON mapping; a bad file is one PlanError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise PlanError(f"{path}: cannot read the plan ({e.strerror or e})") from None
    try:
        if path.endswith(".json"):
            raw = json.loads(text)
        else:
            import yaml  # YAML is a superset of JSON: a .yaml file may hold either

            raw = yaml.safe_load(text)
    except Exception as e:  # the parsers' own errors carry line/column
        raise PlanError(f"{path}: not a valid plan file: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: a plan is a mapping of keys (see docs/ablation.md), got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides: List[str], source: str = "--set") -> dict:
    """`key=value` or `a.b=value` (value read as YAML: numbers, lists, strings) on a copy of `raw`."""
    import yaml

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise PlanError(
                f"{source} {item!r}: expected KEY=VALUE (e.g. token_budget=2000000 or layout.nproc_per_node=2)"
            )
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PlanError(f"{source} {item!r}: {part} is not a mapping")
        try:
            node[parts[-1]] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            node[parts[-1]] = value
    return out


def _flag_value(args: List[str], flag: str) -> Optional[str]:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _given_flags(args: List[str]) -> List[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def parse_plan(raw: dict, source: str, base_dir: str) -> Plan:
    """Check every key and value; relative paths are resolved against `base_dir` (the plan file's directory)."""

    def fail(message: str):
        raise PlanError(f"{source}: {message}")

    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        fail(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_KEYS))})")
    missing = [k for k in REQUIRED if raw.get(k) in (None, "", [])]
    if missing:
        fail(f"missing key(s) {', '.join(missing)}")

    def mapping(key: str, value, allowed: set) -> dict:
        if not isinstance(value, dict):
            fail(f"{key}: expected a mapping with keys {', '.join(sorted(allowed))}, got {value!r}")
        extra = sorted(set(value) - allowed)
        if extra:
            fail(f"{key}: unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(allowed))})")
        return value

    def integer(key: str, value, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            fail(f"{key}: expected an integer >= {minimum}, got {value!r}")
        return value

    def strings(key: str, value) -> List[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            fail(f"{key}: expected a list of command-line words, got {value!r}")
        return [str(v) for v in value]

    def path(key: str, value, must_exist: bool = True) -> str:
        if not isinstance(value, str) or not value:
            fail(f"{key}: expected a path, got {value!r}")
        resolved = value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))
        if must_exist and not os.path.exists(resolved):
            fail(f"{key}: {resolved} does not exist")
        return resolved

    def synthesizer(key: str, value) -> Synthesizer:
        value = mapping(key, value or {}, SUB_KEYS["synthesizer"])
        engine = value.get("engine", "rules")
        from megatron_ipt.synthesis.engines import ENGINES

        if engine not in ENGINES:
            fail(f"{key}.engine: {engine!r} is not an engine of tools/synthesize.py ({', '.join(ENGINES)})")
        args = strings(f"{key}.args", value.get("args"))
        for owned in ("--input", "--output-dir", "--engine", "--rounds", "--num-shards", "--shard-index", "--resume"):
            if owned in _given_flags(args):
                fail(f"{key}.args: {owned} is set by the ablation (use {key}.engine/rounds)")
        synth = Synthesizer(engine=engine, rounds=integer(f"{key}.rounds", value.get("rounds", 2)), args=args)
        if engine in ENGINES_WITH_MODEL:
            model = synth.model
            if not model:
                fail(f"{key}: engine {engine} needs a model: add --model DIR to {key}.args")
            # a local directory, unless it reads as a hub id (org/name) whose org is no local directory either
            first = model.split("/")[0]
            local = (
                model.startswith((".", "/", "~"))
                or model.count("/") != 1
                or os.path.isdir(os.path.join(base_dir, first))
            )
            if local:
                resolved = model if os.path.isabs(model) else os.path.normpath(os.path.join(base_dir, model))
                if not os.path.isdir(resolved):
                    fail(f"{key}: the synthesizer model {resolved} does not exist")
                synth = Synthesizer(engine, synth.rounds, [resolved if a == model else a for a in args])
        return synth

    default_synth = synthesizer("synthesizer", raw.get("synthesizer"))

    arms: List[Arm] = []
    arms_raw = raw["arms"]
    if not isinstance(arms_raw, list):
        fail(f"arms: expected a list (e.g. [vanilla, mix, ipt]), got {arms_raw!r}")
    for i, item in enumerate(arms_raw):
        key = f"arms[{i}]"
        if isinstance(item, str):
            if item not in KINDS:
                fail(
                    f"{key}: unknown arm {item!r} (known: {', '.join(KINDS)}; or a mapping {{name, kind, recipe, synthesizer}})"
                )
            item = {"name": item, "kind": item}
        item = mapping(key, item, SUB_KEYS["arm"])
        name, kind = item.get("name"), item.get("kind", item.get("name"))
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
            fail(f"{key}.name: {name!r} must be a plain name (letters, digits, _ . -)")
        if kind not in KINDS:
            fail(f"{key}.kind: unknown arm kind {kind!r} (known: {', '.join(KINDS)})")
        if kind == "ipt":
            recipe = item.get("recipe", "general")
            if recipe not in RECIPES:
                fail(f"{key}.recipe: {recipe!r} is not an IPT recipe ({', '.join(RECIPES)})")
            synth = synthesizer(f"{key}.synthesizer", item["synthesizer"]) if "synthesizer" in item else default_synth
            arms.append(Arm(name, kind, recipe, synth))
        else:
            for extra in ("recipe", "synthesizer"):
                if extra in item:
                    fail(f"{key}.{extra}: only an ipt arm has a {extra}")
            arms.append(Arm(name, kind))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        fail(f"arms: names must be unique, got {names}")
    if not any(a.kind == "ipt" for a in arms):
        fail("arms: at least one ipt arm is needed (the ablation compares IPT with its baselines)")
    if len(arms) < 2:
        fail("arms: at least two arms are needed to compare")

    instruction = raw.get("instruction_data")
    if instruction is not None:
        instruction = mapping("instruction_data", instruction, SUB_KEYS["instruction_data"])
        if len(instruction) != 1:
            fail("instruction_data: give exactly one of tuning_data, general_instructions")
        ((k, v),) = instruction.items()
        instruction = {k: path(f"instruction_data.{k}", v)}
    if any(a.kind == "mix" for a in arms) and instruction is None:
        fail("arms: a mix arm needs instruction_data (tuning_data: PATH or general_instructions: PATH)")
    if any(a.kind == "ipt" and a.recipe == "domain" for a in arms) and (
        instruction is None or "general_instructions" not in instruction
    ):
        fail("arms: an ipt arm with recipe domain needs instruction_data.general_instructions (mixed 1:1 by tokens)")

    model_raw = mapping("model", raw["model"], SUB_KEYS["model"])
    model = Model(
        preset=model_raw.get("preset"),
        args=strings("model.args", model_raw.get("args")),
        hf_dir=path("model.hf_dir", model_raw["hf_dir"]) if model_raw.get("hf_dir") else None,
    )
    if model.hf_dir and model.preset:
        fail("model: give preset/args (from scratch) or hf_dir (continual pre-training), not both")
    if not model.hf_dir and not model.preset and not model.args:
        fail("model: give a preset, Megatron model flags in args, or hf_dir")
    if model.hf_dir and not os.path.isfile(os.path.join(model.hf_dir, "config.json")):
        fail(f"model.hf_dir: {model.hf_dir} has no config.json (a Hugging Face model directory is needed)")
    if model.preset:
        from megatron_ipt.training.presets import PRESETS

        if model.preset not in PRESETS and not os.path.isfile(path("model.preset", model.preset, must_exist=False)):
            fail(
                f"model.preset: {model.preset!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model JSON file"
            )
        if model.preset not in PRESETS:
            model = Model(path("model.preset", model.preset), model.args, None)

    tokenizer = mapping("tokenizer", raw.get("tokenizer") or {}, SUB_KEYS["tokenizer"])
    if model.hf_dir:
        if tokenizer:
            fail("tokenizer: continual pre-training uses the Hugging Face model's own tokenizer; remove the key")
    elif not tokenizer.get("type"):
        fail("tokenizer.type: required from scratch (e.g. SentencePieceTokenizer with tokenizer.model: PATH)")

    layout_raw = mapping("layout", raw.get("layout") or {}, SUB_KEYS["layout"])
    layout = Layout(
        nproc_per_node=integer("layout.nproc_per_node", layout_raw.get("nproc_per_node", 1)),
        tensor_model_parallel_size=integer(
            "layout.tensor_model_parallel_size", layout_raw.get("tensor_model_parallel_size", 1)
        ),
        pipeline_model_parallel_size=integer(
            "layout.pipeline_model_parallel_size", layout_raw.get("pipeline_model_parallel_size", 1)
        ),
    )
    model_parallel = layout.tensor_model_parallel_size * layout.pipeline_model_parallel_size
    if layout.nproc_per_node % model_parallel:
        fail(f"layout: nproc_per_node {layout.nproc_per_node} is not a multiple of TP x PP = {model_parallel}")

    seeds = raw.get("seeds", [1, 2, 3])
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        fail(f"seeds: expected a list of distinct integers, got {seeds!r}")
    seeds = [integer(f"seeds[{i}]", s, 0) for i, s in enumerate(seeds)]

    pretrain_args = strings("pretrain_args", raw.get("pretrain_args"))
    for flag in _given_flags(pretrain_args):
        if flag in OWNED_PRETRAIN_FLAGS:
            fail(f"pretrain_args: {flag} is set by the ablation for every run (see docs/ablation.md)")
    evaluate_args = strings("evaluate_args", raw.get("evaluate_args"))
    for flag in _given_flags(evaluate_args):
        if flag in OWNED_EVALUATE_FLAGS:
            fail(f"evaluate_args: {flag} is set by the ablation for every run")

    convert_fraction = raw.get("convert_fraction", 0.2)
    if not isinstance(convert_fraction, (int, float)) or not 0 < convert_fraction <= 1:
        fail(f"convert_fraction: expected a fraction in (0, 1], got {convert_fraction!r}")
    max_epochs = raw.get("max_epochs", 1.0)
    if not isinstance(max_epochs, (int, float)) or max_epochs <= 0:
        fail(f"max_epochs: expected a positive number, got {max_epochs!r}")

    plan = Plan(
        corpus=path("corpus", raw["corpus"]),
        held_out=path("held_out", raw["held_out"]),
        token_budget=integer("token_budget", raw["token_budget"]),
        arms=arms,
        model=model,
        seq_length=integer("seq_length", raw["seq_length"], 8),
        micro_batch_size=integer("micro_batch_size", raw["micro_batch_size"]),
        global_batch_size=integer("global_batch_size", raw["global_batch_size"]),
        tokenizer_type=tokenizer.get("type"),
        tokenizer_model=path("tokenizer.model", tokenizer["model"]) if tokenizer.get("model") else None,
        text_key=raw.get("text_key", "text"),
        tasks=path("tasks", raw["tasks"]) if raw.get("tasks") else None,
        build_tasks_args=strings("build_tasks_args", raw.get("build_tasks_args")),
        synthesizer=default_synth,
        convert_fraction=float(convert_fraction),
        instruction_data=instruction,
        max_epochs=float(max_epochs),
        split=str(raw.get("split", "98,2,0")),
        pretrain_args=pretrain_args,
        evaluate_args=evaluate_args,
        seeds=seeds,
        layout=layout,
    )
    batch = plan.micro_batch_size * layout.data_parallel_size
    if plan.global_batch_size % batch:
        fail(
            f"global_batch_size {plan.global_batch_size} is not a multiple of micro_batch_size x data-parallel size "
            f"= {batch}"
        )
    if plan.train_iters < 1:
        fail(
            f"token_budget {plan.token_budget:,} is less than one global batch "
            f"({plan.global_batch_size} x {plan.seq_length} = {plan.tokens_per_iteration:,} tokens)"
        )
    return plan


def load_plan(path: str, overrides: List[str] = ()) -> Plan:
    raw = apply_overrides(read_plan_file(path), list(overrides))
    return parse_plan(raw, path, os.path.dirname(os.path.abspath(path)))


# -- the run directory's record of its plan --------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(value, dict):
        out: Dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differing_keys(old: dict, new: dict) -> List[str]:
    """The dotted keys whose values differ between two resolved plans (lists compared whole)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    paths = [path]
    if os.path.isdir(path):
        paths = sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files)
    for p in paths:
        h.update(os.path.relpath(p, path).encode() if p != path else b"")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def resolved(plan: Plan) -> dict:
    """plan.json: the plan with defaults and derived values, and the content hashes of the inputs it names (a
    changed corpus under the same path is a different plan)."""
    out = plan.to_json()
    inputs = {"corpus": plan.corpus, "held_out": plan.held_out}
    if plan.tasks:
        inputs["tasks"] = plan.tasks
    if plan.instruction_data:
        inputs.update({f"instruction_data.{k}": v for k, v in plan.instruction_data.items()})
    out["input_sha256"] = {name: file_sha256(p) for name, p in inputs.items()}
    return out


def check_held_out(plan: Plan) -> None:
    """Held-out documents must not be in the training corpus (exact text after whitespace normalisation)."""
    from megatron_ipt.corpus.reader import read_texts
    from megatron_ipt.io.jsonl import BadLines

    def norm(text: str) -> str:
        return " ".join(text.split())

    held = [norm(t) for _, t in read_texts(plan.held_out, plan.text_key, BadLines())]
    if not held:
        raise PlanError(f"held_out: {plan.held_out} holds no documents")
    train = {norm(t) for _, t in read_texts(plan.corpus, plan.text_key, BadLines())}
    overlap = sum(1 for t in held if t in train)
    if overlap:
        raise PlanError(
            f"held_out: {overlap} of {len(held)} held-out documents are also in the training corpus {plan.corpus}; "
            "remove them from one of the two (they would be trained on and then scored as unseen)"
        )
