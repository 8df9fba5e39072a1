"""The Llama / Mistral family in Hugging Face layout <-> megatron-core GPTModel layout (pure tensor maths).

Megatron names are the parameter names of a GPTModel built with the local layer spec at TP=1/PP=1 (what the
converter builds). Its sharded state dict stores the two norms under the Transformer Engine names
(`input_layernorm.` -> `self_attention.linear_qkv.layer_norm_`, `pre_mlp_layernorm.` -> `mlp.linear_fc1.layer_norm_`,
the local spec's `sharded_state_dict_keys_map`) and stacks the layers on one axis, so a checkpoint written from
this layout loads into the TE spec on GPUs and at any TP/PP.

Layouts (verified against megatron-core 0.16.1 and checked by the logits tests):
- Attention: one fused `linear_qkv` whose output rows are grouped per key/value head (query group): for group g,
  the query heads of that group, then its key head, then its value head, each `head_dim` rows:
  [q_{g*r} .. q_{g*r+r-1}, k_g, v_g] for g = 0 .. groups-1, r = heads / groups
  (`SelfAttention.get_query_key_value_tensors` views the output as [groups, (r + 2) * head_dim] and splits it).
  HF's grouped-query attention gives query head j the key/value head j // r (`repeat_kv`), the same grouping.
  TP shards these rows by whole groups, which is why the grouping is in the weight, not only in the forward.
- MLP: SwiGLU with `linear_fc1` = [gate; up] stacked on the output dimension: megatron computes
  silu(first half) * second half (`torch.chunk(x, 2, -1)` in MLP.forward / `swiglu`), HF computes
  down(silu(gate(x)) * up(x)). The sharded state dict splits fc1 in these two halves, so TP shards each.
- RoPE: HF Llama rotates halves (`rotate_half`: the first and second halves of each head are the pairs), which is
  megatron's `rotary_interleaved=False` (the default), so q/k rows are copied unpermuted. Same inverse
  frequencies theta^(-2i/d) in float32; Llama-3.1 "llama3" scaling maps to megatron's `rope_scaling` when its
  parameters are the ones megatron hard-codes (low 1, high 4, original context 8192).
- RMSNorm: weight * x / sqrt(mean(x^2) + eps) in both, eps from `rms_norm_eps` (-> `norm_epsilon`).
- Output layer: untied -> `output_layer.weight` = `lm_head.weight`; tied -> megatron shares the word embedding
  (no output_layer parameter at PP=1) and HF omits `lm_head.weight`.
- Vocabulary: megatron's embedding (and output layer) has more rows than the HF vocabulary, padded by Megatron's
  rule (a multiple of make_vocab_size_divisible_by x TP); the extra rows are zeros on import (the tokenizer never
  produces them) and dropped on export. A run at another TP pads differently and still loads the checkpoint:
  megatron-core marks these two tensors `allow_shape_mismatch`, so the shared rows load and the rest are zero.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, Tuple

import torch

from megatron_ipt.errors import UserError
from megatron_ipt.training.presets import MISTRAL_STYLE

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}
# megatron-core's rope_scaling implements Llama-3.1's scaling with these fixed parameters only.
LLAMA3_ROPE_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


class ConversionError(UserError, ValueError):
    pass


ROPE_NUMBERS = ("rope_theta", "factor", *LLAMA3_ROPE_FIXED)


def _positive_int(hf: dict, key: str, source: str, default=None):
    """hf[key] as a positive integer (`default` when absent or null); ConversionError naming the key otherwise."""
    value = hf.get(key)
    if value is None:
        if default is None:
            raise ConversionError(f"{source}: {key} missing or null")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConversionError(f"{source}: {key} is {value!r}; expected a positive integer")
    return value


def _positive_float(value, key: str, source: str) -> float:
    """A positive finite number (JSON allows NaN/Infinity; an RMSNorm epsilon or rope base cannot be either)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConversionError(f"{source}: {key} is {value!r}; expected a positive finite number")
    return float(value)


def _bool(hf: dict, key: str, source: str) -> bool:
    """hf[key] as a JSON boolean (absent or null: false); a string "false" would otherwise read as true."""
    value = hf.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConversionError(f"{source}: {key} is {value!r}; expected true or false")
    return bool(value)


def _rope(hf: dict, source: str) -> dict:
    """Rope settings from either transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`) configs,
    every number checked where it was read."""
    rope = {}
    for container in ("rope_scaling", "rope_parameters"):
        part = hf.get(container)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise ConversionError(f"{source}: {container} is {part!r}; expected an object or null")
        for key in ROPE_NUMBERS:
            if key in part:
                _positive_float(part[key], f"{container}.{key}", source)
        rope.update(part)
    if "rope_theta" not in rope:
        rope["rope_theta"] = _positive_float(hf.get("rope_theta", 10000.0), "rope_theta", source)
    rope["rope_type"] = rope.get("rope_type", rope.get("type", "default"))
    if not isinstance(rope["rope_type"], str):
        raise ConversionError(f"{source}: rope type {rope['rope_type']!r} is not a string")
    return rope


REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def model_fields_from_hf(hf: dict, source: str) -> dict:
    """A HF config.json (dict) -> our model fields (all but make_vocab_size_divisible_by). Raises
    ConversionError naming `source` and the key for a value that is missing, of the wrong type or out of range,
    and for what we cannot represent exactly."""
    architectures = hf.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ConversionError(f"{source}: architectures is {architectures!r}; expected a list of class names")
    if len(architectures) != 1 or architectures[0] not in ARCHITECTURES:
        raise ConversionError(
            f"{source}: architectures {architectures} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )
    sizes = {key: _positive_int(hf, key, source) for key in REQUIRED_KEYS}
    for key in ("attention_bias", "mlp_bias"):
        if _bool(hf, key, source):
            raise ConversionError(f"{source}: {key}=true is not supported (our models have no linear biases)")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (SwiGLU needs silu)")
    rope = _rope(hf, source)
    scaling = {"default": False, "llama3": True}.get(rope["rope_type"])
    if scaling is None:
        raise ConversionError(f"{source}: rope type {rope['rope_type']!r} is not supported (default, llama3)")
    if scaling:
        differs = {k: rope.get(k) for k, v in LLAMA3_ROPE_FIXED.items() if rope.get(k) != v}
        if differs:
            raise ConversionError(
                f"{source}: llama3 rope scaling with {differs}; megatron-core implements it only "
                f"with {LLAMA3_ROPE_FIXED}"
            )
    heads, hidden = sizes["num_attention_heads"], sizes["hidden_size"]
    groups = _positive_int(hf, "num_key_value_heads", source, default=heads)
    if heads % groups:
        raise ConversionError(
            f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {groups}"
        )
    if hf.get("head_dim") is None and hidden % heads:
        raise ConversionError(
            f"{source}: hidden_size {hidden} is not divisible by num_attention_heads {heads} (and no head_dim)"
        )
    head_dim = _positive_int(hf, "head_dim", source, default=hidden // heads)
    max_positions = _positive_int(hf, "max_position_embeddings", source, default=2048)
    # Mistral v0.1: attention is windowed beyond sliding_window; ours is not
    window = _positive_int(hf, "sliding_window", source, default=max_positions)
    return dict(
        num_layers=sizes["num_hidden_layers"],
        hidden_size=hidden,
        ffn_hidden_size=sizes["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=groups,
        kv_channels=head_dim,
        seq_length=min(max_positions, window),
        max_position_embeddings=max_positions,
        rotary_base=float(rope["rope_theta"]),
        use_rope_scaling=scaling,
        rope_scaling_factor=float(rope.get("factor", 8.0)),
        norm_epsilon=_positive_float(hf.get("rms_norm_eps", 1e-6), "rms_norm_eps", source),
        vocab_size=sizes["vocab_size"],
        untie_embeddings_and_output_weights=not _bool(hf, "tie_word_embeddings", source),
        apply_layernorm_1p=False,
        rotary_percent=1.0,
        **MISTRAL_STYLE,  # the Llama block: RMSNorm, SwiGLU, no biases, RoPE, no dropout
    )


def check_llama_style(fields: dict, source: str) -> None:
    """Only Llama-style blocks map onto a HF Llama checkpoint (issue 12's architecture flags can describe others)."""
    weights = {k: v for k, v in MISTRAL_STYLE.items() if not k.endswith("dropout")}  # dropout changes no weights
    differs = {k: fields.get(k, v) for k, v in weights.items() if fields.get(k, v) != v}
    if fields.get("apply_layernorm_1p") or fields.get("rotary_percent", 1.0) != 1.0:
        differs.update(apply_layernorm_1p=fields.get("apply_layernorm_1p"), rotary_percent=fields.get("rotary_percent"))
    if differs:
        raise ConversionError(f"{source}: {differs} is not a Llama-style model; only those convert to Hugging Face")


def hf_config_from_fields(fields: dict, base: dict | None, dtype: torch.dtype) -> dict:
    """The config.json to export: the source model's config (keeps token ids, chat settings, ...) with every
    field our model defines set from our fields, or a plain Llama config for models trained from scratch."""
    check_llama_style(fields, "model.json")
    hf = dict(
        base
        or {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
        }
    )
    heads = fields["num_attention_heads"]
    hf.update(
        hidden_size=fields["hidden_size"],
        intermediate_size=fields["ffn_hidden_size"],
        num_hidden_layers=fields["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=fields["num_query_groups"],
        head_dim=fields["kv_channels"] or fields["hidden_size"] // heads,
        max_position_embeddings=fields["max_position_embeddings"],
        rms_norm_eps=fields["norm_epsilon"],
        vocab_size=fields["vocab_size"],
        tie_word_embeddings=not fields["untie_embeddings_and_output_weights"],
    )
    scaling = (
        dict(rope_type="llama3", factor=fields["rope_scaling_factor"], **LLAMA3_ROPE_FIXED)
        if fields["use_rope_scaling"]
        else None
    )
    # transformers 5 reads rope_parameters; 4.x reads rope_theta / rope_scaling: write both spellings.
    hf["rope_parameters"] = {**(scaling or {"rope_type": "default"}), "rope_theta": fields["rotary_base"]}
    hf["rope_theta"] = fields["rotary_base"]
    hf["rope_scaling"] = scaling
    name = str(dtype).replace("torch.", "")
    hf["dtype"] = hf["torch_dtype"] = name
    return hf


def hf_shapes(fields: dict) -> Dict[str, Tuple[int, ...]]:
    """Every tensor a HF checkpoint of this shape holds, with its shape."""
    h, ffn, heads, groups = (
        fields[k] for k in ("hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups")
    )
    d, vocab = fields["kv_channels"] or h // heads, fields["vocab_size"]
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    if fields["untie_embeddings_and_output_weights"]:
        shapes["lm_head.weight"] = (vocab, h)
    for i in range(fields["num_layers"]):
        layer = {
            "input_layernorm.weight": (h,),
            "post_attention_layernorm.weight": (h,),
            "self_attn.q_proj.weight": (heads * d, h),
            "self_attn.k_proj.weight": (groups * d, h),
            "self_attn.v_proj.weight": (groups * d, h),
            "self_attn.o_proj.weight": (h, heads * d),
            "mlp.gate_proj.weight": (ffn, h),
            "mlp.up_proj.weight": (ffn, h),
            "mlp.down_proj.weight": (h, ffn),
        }
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in layer.items()})
    return shapes


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int, head_dim: int) -> torch.Tensor:
    """HF q/k/v projections [heads*d, h], [groups*d, h] x2 -> megatron linear_qkv rows per group [q.., k, v]."""
    h = q.shape[1]
    q = q.reshape(groups, -1, head_dim, h)
    return torch.cat([q, k.reshape(groups, 1, head_dim, h), v.reshape(groups, 1, head_dim, h)], dim=1).reshape(-1, h)


def split_qkv(qkv: torch.Tensor, groups: int, head_dim: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = qkv.shape[1]
    per_group = qkv.reshape(groups, -1, head_dim, h)
    r = per_group.shape[1] - 2
    return (per_group[:, :r].reshape(-1, h), per_group[:, r].reshape(-1, h), per_group[:, r + 1].reshape(-1, h))


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] == rows:
        return weight
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])])


LAYER_NAMES = {  # megatron (under decoder.layers.{i}.) -> HF (under model.layers.{i}.), one-to-one tensors
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}


def hf_to_megatron(get: Callable[[str], torch.Tensor], fields: dict, rows: int) -> Iterator[Tuple[str, torch.Tensor]]:
    """Megatron parameters from HF tensors (`get(name)`), one at a time so a big model is never held twice;
    `rows`: the padded vocabulary."""
    groups = fields["num_query_groups"]
    head_dim = fields["kv_channels"] or fields["hidden_size"] // fields["num_attention_heads"]
    yield "embedding.word_embeddings.weight", _pad_rows(get("model.embed_tokens.weight"), rows)
    for i in range(fields["num_layers"]):
        ours, theirs = f"decoder.layers.{i}.", f"model.layers.{i}."
        for megatron_name, hf_name in LAYER_NAMES.items():
            yield ours + megatron_name, get(theirs + hf_name)
        attn = theirs + "self_attn."
        yield (
            ours + "self_attention.linear_qkv.weight",
            fuse_qkv(
                get(attn + "q_proj.weight"), get(attn + "k_proj.weight"), get(attn + "v_proj.weight"), groups, head_dim
            ),
        )
        yield (
            ours + "mlp.linear_fc1.weight",
            torch.cat([get(theirs + "mlp.gate_proj.weight"), get(theirs + "mlp.up_proj.weight")]),
        )
    yield "decoder.final_layernorm.weight", get("model.norm.weight")
    if fields["untie_embeddings_and_output_weights"]:
        yield "output_layer.weight", _pad_rows(get("lm_head.weight"), rows)


def megatron_to_hf(params: Dict[str, torch.Tensor], fields: dict) -> Iterator[Tuple[str, torch.Tensor]]:
    """HF tensors from megatron parameters (views where possible); the padded vocabulary rows are dropped."""
    vocab_size = fields["vocab_size"]
    groups = fields["num_query_groups"]
    head_dim = fields["kv_channels"] or fields["hidden_size"] // fields["num_attention_heads"]
    yield "model.embed_tokens.weight", params["embedding.word_embeddings.weight"][:vocab_size]
    for i in range(fields["num_layers"]):
        ours, theirs = f"decoder.layers.{i}.", f"model.layers.{i}."
        for megatron_name, hf_name in LAYER_NAMES.items():
            yield theirs + hf_name, params[ours + megatron_name]
        q, k, v = split_qkv(params[ours + "self_attention.linear_qkv.weight"], groups, head_dim)
        yield from ((theirs + f"self_attn.{n}_proj.weight", t) for n, t in zip("qkv", (q, k, v)))
        gate, up = torch.chunk(params[ours + "mlp.linear_fc1.weight"], 2)
        yield theirs + "mlp.gate_proj.weight", gate
        yield theirs + "mlp.up_proj.weight", up
    yield "model.norm.weight", params["decoder.final_layernorm.weight"]
    if fields["untie_embeddings_and_output_weights"]:
        yield "lm_head.weight", params["output_layer.weight"][:vocab_size]
