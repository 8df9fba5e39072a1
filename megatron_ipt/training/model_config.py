"""The model's configuration: its shape and architecture (`ModelConfig`), from a preset, a model JSON file or the
shape flags alone.

`--model` takes a preset name (presets.py) or a model JSON file (e.g. the model.json that tools/convert_checkpoint.py
and tools/pretrain.py --save write), and the shape flags override either; every model field is such a flag. Without
`--model` the shape flags alone describe the model, as in Megatron-LM (`ModelConfig.from_flags`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Optional

from megatron_ipt.flags import Alias, add_flags, flag, flag_fields
from megatron_ipt.tokenizers import NULL_TYPES, TokenizerSpec
from megatron_ipt.training.presets import MISTRAL_STYLE, PRESETS

BUILT_POSITION_EMBEDDINGS = ("learned_absolute", "rope", "none")  # what models.build makes of --position-embedding-type
# A model file holds the model fields plus this key: the source Hugging Face config.json of a converted model, which
# the export back to HF starts from (so it keeps token ids, chat settings, ...).
HF_CONFIG_KEY = "hf_config"


def pad_vocab(vocab_size: int, tp: int, divisible_by: int = 128) -> int:
    """Megatron's rule: the embedding has vocab_size rows rounded up to a multiple of divisible_by x TP (the tokenizer
    never produces the extra rows). A checkpoint padded for another TP still loads: megatron-core lets the embedding
    and output layer differ in rows (the rows both have are loaded, the model's others are zero)."""
    multiple = divisible_by * tp
    return ((vocab_size + multiple - 1) // multiple) * multiple


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The model's shape: the fields of a model file, each also a flag that overrides the preset or file. Defaults are
    Megatron-LM's; a preset or model file must give the fields without one. The order of the fields is the order of
    a model file's keys."""

    num_layers: int = flag(help=None, field_required=True)
    hidden_size: int = flag(help=None, field_required=True)
    ffn_hidden_size: int = flag(help=None, field_required=True)
    num_attention_heads: int = flag(help=None, field_required=True)
    num_query_groups: int = flag(help=None, field_required=True)
    kv_channels: Optional[int] = flag(None, help=None)  # None: hidden_size / num_attention_heads
    seq_length: int = flag(help=None, field_required=True)
    max_position_embeddings: int = flag(help=None, field_required=True)
    rotary_base: float = flag(10000, help=None)
    use_rope_scaling: bool = flag(False, help=None)
    rope_scaling_factor: float = flag(8.0, help=None)
    norm_epsilon: float = flag(1e-5, help=None)
    vocab_size: int = flag(help=None, field_required=True)
    make_vocab_size_divisible_by: int = flag(128, help=None)
    untie_embeddings_and_output_weights: bool = flag(False, help=None)
    # The architecture, with Megatron-LM's defaults (a LayerNorm/GeLU/learned-position GPT with biases and dropout
    # 0.1); the presets set MISTRAL_STYLE. A model file without these fields is from before they existed, when every
    # model was MISTRAL_STYLE, so `_read_model_file` fills them in from there.
    normalization: str = flag("LayerNorm", help=None, choices=("LayerNorm", "RMSNorm"))
    apply_layernorm_1p: bool = flag(False, help=None)  # zero-centered gamma: the norm scales by (1 + weight)
    swiglu: bool = flag(False, help=None)
    add_bias_linear: bool = flag(True, help=None, flags=("--disable-bias-linear",))
    position_embedding_type: str = flag(
        "learned_absolute",
        help=None,
        choices=("learned_absolute", "rope", "yarn", "mrope", "relative", "none"),  # Megatron-LM's
        aliases=[
            Alias(
                "--use-rotary-position-embeddings",
                "rope",
                help="Megatron-LM's older spelling of --position-embedding-type rope",
            )
        ],
    )
    rotary_percent: float = flag(1.0, help=None)
    attention_dropout: float = flag(0.1, help=None)
    hidden_dropout: float = flag(0.1, help=None)
    # Not model fields: the `--model` this came from (a preset name or a model file), and the source Hugging Face
    # config.json a model file carries (converted models).
    source: str = field(default="", compare=False)
    hf_config: Optional[dict] = None

    def __post_init__(self):
        if self.position_embedding_type not in BUILT_POSITION_EMBEDDINGS:
            from megatron_ipt.training.megatron_flags import refuse

            refuse(
                "--position-embedding-type",
                f"{self.position_embedding_type} is not built here; use one of {', '.join(BUILT_POSITION_EMBEDDINGS)} "
                "(rope with --use-rope-scaling for Llama 3.1-style long context)",
            )

    @classmethod
    def load(cls, model: str, **overrides) -> "ModelConfig":
        """A preset name or a model JSON file, with `overrides` (model fields; None keeps the loaded value)."""
        if model in PRESETS:
            values = dict(PRESETS[model])
        elif model.endswith(".json") or os.path.isfile(model):
            values = _read_model_file(model)
        else:
            raise SystemExit(
                f"--model {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model JSON file"
            )
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(source=model, **values)

    @classmethod
    def from_args(cls, args, default_model: Optional[str] = None) -> "ModelConfig":
        """The flags of `add_model_args`: `--model` (else `default_model`) overridden by the shape flags given; with
        neither, the shape flags alone (`from_flags`; the vocabulary size defaults to the tokenizer's)."""
        flags = {name: getattr(args, name) for name in MODEL_FIELDS}
        if getattr(args, "tokenizer_type", None) in NULL_TYPES:
            # Megatron-LM's --vocab-size is NullTokenizer's (the ids before its EOD); the model's vocabulary is the
            # tokenizer's, one more (then padded), as Megatron-LM sizes it from every tokenizer
            flags["vocab_size"] = TokenizerSpec.from_args(args).build().vocab_size
        model = args.model or default_model
        if model:
            return cls.load(model, **flags)
        return cls.from_flags(flags, tokenizer_vocab_size=lambda: _tokenizer_vocab_size(args))

    # -- a model from flags alone (Megatron-LM's way) ------------------------------------------------------------
    @classmethod
    def from_flags(cls, flags: dict, tokenizer_vocab_size=None) -> "ModelConfig":
        """A model described by its flags alone, with Megatron-LM's defaults for the optional ones
        (megatron/training/arguments.py, `validate_args`): ffn_hidden_size from hidden_size as Megatron computes it
        (4h, or the SwiGLU rule with --swiglu), num_query_groups = num_attention_heads (no GQA), kv_channels = hidden_size /
        heads (kept None: megatron-core derives it). Where we differ: max_position_embeddings defaults to seq_length
        (Megatron-LM requires it; with RoPE it sizes nothing), and vocab_size to the tokenizer's
        (`tokenizer_vocab_size()`), as Megatron takes it from the tokenizer. Missing required flags are one error
        naming them all."""
        values = {name: value for name, value in flags.items() if value is not None}
        missing = [name for name in FLAGS_REQUIRED_WITHOUT_MODEL if name not in values]
        if "vocab_size" not in values:
            vocab_size = tokenizer_vocab_size() if tokenizer_vocab_size else None
            if vocab_size is None:
                missing.append("vocab_size")
            else:
                values["vocab_size"] = vocab_size
        if missing:
            raise SystemExit(
                "no --model, and the model flags do not describe a model: missing "
                + ", ".join("--" + name.replace("_", "-") for name in missing).replace(
                    "--vocab-size", "--vocab-size (or a --tokenizer-model to take it from)"
                )
                + f" (give them, or --model with a preset ({', '.join(sorted(PRESETS))}) or a model JSON file)"
            )
        values.setdefault(
            "ffn_hidden_size", megatron_ffn_hidden_size(values["hidden_size"], swiglu=values.get("swiglu", False))
        )
        values.setdefault("num_query_groups", values["num_attention_heads"])
        values.setdefault("max_position_embeddings", values["seq_length"])
        return cls(source="flags", **values)

    def model_fields(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_FIELDS}

    def to_json(self) -> dict:
        """The model as a model file's contents (what `--model file.json` reads back)."""
        fields = self.model_fields()
        return fields if self.hf_config is None else {**fields, HF_CONFIG_KEY: self.hf_config}

    def padded_vocab_size(self, tensor_model_parallel_size: int) -> int:
        return pad_vocab(self.vocab_size, tensor_model_parallel_size, self.make_vocab_size_divisible_by)


MODEL_FIELDS = tuple(f.name for f in flag_fields(ModelConfig))
REQUIRED_MODEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name in MODEL_FIELDS and f.default is dataclasses.MISSING
)
OPTIONAL_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.default is None)
# Without --model: what Megatron-LM requires (num_layers, hidden_size, num_attention_heads, seq_length); vocab_size
# comes from the tokenizer when not given.
FLAGS_REQUIRED_WITHOUT_MODEL = ("num_layers", "hidden_size", "num_attention_heads", "seq_length")


def megatron_ffn_hidden_size(hidden_size: int, swiglu: bool) -> int:
    """Megatron-LM's default --ffn-hidden-size: 4 x hidden, or with SwiGLU two thirds of that (its two input
    matrices keep the parameter count), rounded down to a multiple of 64."""
    return int(4 * hidden_size * 2 / 3 / 64) * 64 if swiglu else 4 * hidden_size


def _tokenizer_vocab_size(args) -> Optional[int]:
    """The vocabulary size of the tokenizer the flags name, or None without one."""
    spec = TokenizerSpec.from_args(args)
    if spec is None:
        return None
    try:
        return spec.build().vocab_size
    except (OSError, ValueError, RuntimeError) as error:
        from megatron_ipt.tokenizers.base import TokenizerFileError

        if isinstance(error, TokenizerFileError):  # names the file and the problem already
            raise SystemExit(f"{error} (needed for the vocabulary size: --vocab-size not given)") from None
        raise SystemExit(f"--vocab-size not given and --tokenizer-model {spec.model} cannot be read: {error}") from None


def _plain_type(hint) -> type:
    """int for int and Optional[int]."""
    return next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)


MODEL_FIELD_TYPES = {name: _plain_type(hint) for name, hint in typing.get_type_hints(ModelConfig).items()}


def _read_model_file(path: str) -> dict:
    """A model JSON file -> its model fields and source HF config (checked: known names, required fields present,
    right types; integral floats are accepted for int fields and ints for float fields)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--model {path}: cannot read a JSON model file: {error}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"--model {path}: expected a JSON object of model fields")
    unknown = sorted(set(data) - set(MODEL_FIELDS) - {HF_CONFIG_KEY})
    missing = [f for f in REQUIRED_MODEL_FIELDS if f not in data]
    if unknown or missing:
        raise SystemExit(
            f"--model {path}: unknown fields {unknown}, missing fields {missing} "
            f"(model fields: {', '.join(MODEL_FIELDS)})"
        )
    values = {**MISTRAL_STYLE, **data}  # files from before the architecture fields: what every model then was
    for name, value in data.items():
        if name == HF_CONFIG_KEY:
            continue
        kind = MODEL_FIELD_TYPES[name]
        if value is None and name in OPTIONAL_MODEL_FIELDS:
            continue
        if kind is str:
            if not isinstance(value, str):
                raise SystemExit(f"--model {path}: field {name!r} is {value!r}, expected a string")
            continue
        if isinstance(value, bool) == (kind is bool) and (
            kind is bool or isinstance(value, (int, float)) and (kind is float or float(value).is_integer())
        ):
            values[name] = kind(value)
        else:
            raise SystemExit(f"--model {path}: field {name!r} is {value!r}, expected {kind.__name__}")
    return values


@dataclass(frozen=True)
class ModelChoice:
    """The flag that picks the model the shape flags override."""

    model: Optional[str] = flag(
        None,
        help=f"a preset ({', '.join(sorted(PRESETS))}) or a model JSON file (e.g. the model.json that "
        "tools/convert_checkpoint.py writes): its fields are the defaults of the flags below. Without it the flags "
        "alone describe the model, as in Megatron-LM: --num-layers, --hidden-size, --num-attention-heads and "
        "--seq-length are required, the rest default as Megatron-LM computes them (--vocab-size: the tokenizer's)",
    )


def add_model_args(parser) -> None:
    """`--model` and one override flag per model field (`--num-layers`, ...): a flag not given is None."""
    g = parser.add_argument_group("model")
    add_flags(g, ModelChoice)
    add_flags(g, ModelConfig, as_overrides=True)
