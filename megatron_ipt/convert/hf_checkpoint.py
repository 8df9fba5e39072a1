"""Hugging Face directory <-> our megatron-core checkpoint, in one process.

Import writes `<save>/model.json` (our model fields + the source config.json, the file `--model` takes),
`<save>/tokenizer/` (the source's tokenizer files, for `--tokenizer-model` and the export) and a weights-only
checkpoint `<save>/iter_0000000/` committed by `latest_checkpointed_iteration.txt` (checkpoint.save_weights).
It is saved from a TP=1/PP=1 model; megatron's dist_checkpointing reshards on load, so it loads at any TP/PP
(the vocabulary padding may differ too, see llama.py). Export loads any of our checkpoints (converted or trained,
saved at any TP/PP) into a TP=1/PP=1 model and writes a HF directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from megatron_ipt.convert import hf_io, llama
from megatron_ipt.convert.llama import ConversionError
from megatron_ipt.io import atomic
from megatron_ipt.training.config import ParallelConfig, PrecisionConfig
from megatron_ipt.training.model_config import HF_CONFIG_KEY, ModelConfig, pad_vocab
from megatron_ipt.training.presets import PRESETS

TOKENIZER_DIR = "tokenizer"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _hf_dtype(hf: dict) -> torch.dtype:
    """bfloat16 stays bfloat16; anything else (float32, float16: we do not train in fp16) becomes float32."""
    return torch.bfloat16 if (hf.get("dtype") or hf.get("torch_dtype")) == "bfloat16" else torch.float32


def _build_model(model: ModelConfig, dtype: torch.dtype):
    """A TP=1/PP=1 GPTModel (no random init) in this process, with process groups set up the way training sets
    them up (gloo + the CPU backend without CUDA). The local layer spec, so no Transformer Engine is needed: its
    sharded state dict uses the TE names, so the checkpoint loads into TE models all the same."""
    from megatron_ipt.training import models

    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        raise ConversionError(
            "run the converter as a single process (not under torchrun): its checkpoints load at any TP/PP"
        )
    if not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    precision = PrecisionConfig(bf16=dtype == torch.bfloat16, transformer_impl="local")
    chunks, _ = models.build(model, ParallelConfig(), precision, initialize_weights=False)  # all weights are loaded
    return chunks[0]


def _check_save_dir(save_dir: str) -> None:
    """Refuse a finished checkpoint or foreign files; clear what an interrupted import left behind."""
    from megatron_ipt.training import checkpoint

    if not os.path.isdir(save_dir):
        return
    atomic.remove_stale(save_dir)  # temporaries a killed import left (only a dead process's)
    if os.path.exists(os.path.join(save_dir, checkpoint.MARKER)):
        raise ConversionError(f"{save_dir}: already holds a checkpoint; choose a new --save directory")
    ours = {checkpoint.MODEL_FILE, checkpoint.MODEL_FILE + ".tmp", TOKENIZER_DIR, "iter_0000000.tmp"}
    foreign = sorted(set(os.listdir(save_dir)) - ours)
    if foreign:
        raise ConversionError(f"{save_dir}: not empty ({foreign[:5]}); choose a new --save directory")
    for name in set(os.listdir(save_dir)) & ours:
        path = os.path.join(save_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def import_hf(
    hf_dir: str,
    save_dir: str,
    tensor_model_parallel_size: int = 1,
    make_vocab_size_divisible_by: int = 128,
    dtype: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Convert a HF Llama/Mistral directory into our checkpoint in `save_dir`, its vocabulary padded Megatron's
    way (make_vocab_size_divisible_by x tensor_model_parallel_size; any TP loads it). Returns a summary dict."""
    from megatron_ipt.training import checkpoint, parallel

    start = time.time()
    hf = hf_io.read_config(hf_dir)
    fields = llama.model_fields_from_hf(hf, os.path.join(hf_dir, "config.json"))
    fields["make_vocab_size_divisible_by"] = make_vocab_size_divisible_by
    vocab = fields["vocab_size"]
    padded = pad_vocab(vocab, tensor_model_parallel_size, make_vocab_size_divisible_by)
    torch_dtype = DTYPES[dtype] if dtype else _hf_dtype(hf)
    reader = hf_io.SafetensorsReader(hf_dir)
    reader.check(llama.hf_shapes(fields))  # every input problem is reported before any work
    _check_save_dir(save_dir)
    os.makedirs(save_dir, exist_ok=True)
    model_file = checkpoint.write_model_file(save_dir, {**fields, HF_CONFIG_KEY: hf})
    tokenizer_files = []
    if hf_io.has_tokenizer(hf_dir):
        with hf_io.atomic_directory(os.path.join(save_dir, TOKENIZER_DIR)) as tmp:
            tokenizer_files = hf_io.copy_tokenizer_files(hf_dir, tmp)
    # saved from TP=1 with the rows a model at tensor_model_parallel_size pads to
    divisible_by = make_vocab_size_divisible_by * tensor_model_parallel_size
    model = _build_model(ModelConfig(**{**fields, "make_vocab_size_divisible_by": divisible_by}), torch_dtype)
    try:
        params = dict(model.named_parameters())
        log(
            f"converting {len(reader.files)} tensors from {hf_dir} ({hf['architectures'][0]}, "
            f"{fields['num_layers']} layers, vocab {vocab} -> {padded} rows, {str(torch_dtype)[6:]})"
        )
        filled = set()
        with torch.no_grad():
            for name, tensor in tqdm(
                llama.hf_to_megatron(reader.get, fields, padded),
                total=len(params),
                unit="tensor",
                desc="hf-to-megatron",
                disable=None,
            ):
                if params[name].shape != tensor.shape:  # copy_ would broadcast
                    raise ConversionError(f"internal: {name} is {tuple(params[name].shape)}, got {tuple(tensor.shape)}")
                params[name].copy_(tensor)
                filled.add(name)
        if filled != set(params):  # our mapping and megatron's parameters must agree exactly
            raise ConversionError(f"internal: parameters not filled {sorted(set(params) - filled)[:10]}")
        directory = checkpoint.save_weights(save_dir, [model])
    finally:
        parallel.destroy()
    summary = {
        "checkpoint": directory,
        "model_file": model_file,
        "parameters": sum(p.numel() for p in params.values()),
        "tokenizer_files": tokenizer_files,
        "padded_vocab": padded,
        "seconds": time.time() - start,
    }
    log(
        f"wrote {directory} ({summary['parameters'] / 1e6:.1f} M parameters) and {model_file} in "
        f"{summary['seconds']:.1f} s; train from it with: --model {model_file} --load {save_dir}"
        + (
            f" --tokenizer-type HuggingFaceTokenizer --tokenizer-model {os.path.join(save_dir, TOKENIZER_DIR)}"
            if tokenizer_files
            else ""
        )
    )
    return summary


def _check_against_checkpoint(model, directory: str, model_file: str) -> None:
    """Name the tensor when the model file and the checkpoint disagree (instead of a deep dist_checkpointing error)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    from megatron_ipt.training import checkpoint

    saved = checkpoint.tensors_metadata(directory)  # verified: checksums, and no pickle that could run code
    for sharded in model.sharded_state_dict().values():
        if isinstance(sharded, ShardedTensor):
            shape = tuple(sharded.global_shape)
        elif isinstance(sharded, ShardedTensorFactory):  # SwiGLU fc1, stacked over the layers
            shape = (model.config.num_layers, *sharded.data.shape)
        else:
            continue
        if sharded.key not in saved:
            raise ConversionError(
                f"{directory}: has no tensor {sharded.key!r}, which the model of {model_file} needs "
                f"(tied vs untied output layer?)"
            )
        found = tuple(saved[sharded.key].global_shape)
        # the vocabulary rows may differ (padded for the TP it was saved at; megatron loads the shared rows)
        compared = slice(1, None) if getattr(sharded, "allow_shape_mismatch", False) else slice(None)
        if found[compared] != shape[compared]:
            raise ConversionError(
                f"{directory}: tensor {sharded.key!r} has shape {found}, the model of {model_file} expects {shape}"
            )


def export_hf(
    load_dir: str,
    hf_dir: str,
    model_file: Optional[str] = None,
    tokenizer_dir: Optional[str] = None,
    dtype: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Write the latest checkpoint in `load_dir` (any TP/PP) as a HF directory `hf_dir` (created atomically).
    `model_file`: a preset or model JSON (default: `<load_dir>/model.json`); `tokenizer_dir`: where to copy the
    tokenizer files from (default: the `tokenizer/` beside the model file, when there is one)."""

    from megatron_ipt.training import checkpoint, parallel

    start = time.time()
    hf_io.check_new_directory(hf_dir)
    model_file = model_file or os.path.join(load_dir, checkpoint.MODEL_FILE)
    if model_file not in PRESETS and not os.path.isfile(model_file):
        raise ConversionError(
            f"{model_file} not found: pass --model (the model.json of the converted base model, or a preset)"
        )
    iteration, directory = checkpoint.latest_checkpoint(load_dir)
    if iteration is None:
        raise ConversionError(f"{load_dir}: no committed checkpoint ({checkpoint.MARKER} is missing)")
    model = ModelConfig.load(model_file)
    fields = model.model_fields()
    vocab = fields["vocab_size"]
    embedding = checkpoint.tensors_metadata(directory)["embedding.word_embeddings.weight"]
    if embedding.global_shape[0] < vocab:
        raise ConversionError(
            f"{directory}: the embedding has {embedding.global_shape[0]} rows, fewer than the "
            f"vocabulary of {model_file} ({vocab})"
        )
    torch_dtype = DTYPES[dtype] if dtype else embedding.dtype
    beside = os.path.join(os.path.dirname(os.path.abspath(model_file)), TOKENIZER_DIR)
    if tokenizer_dir is None and os.path.isfile(model_file) and os.path.isdir(beside):
        tokenizer_dir = beside
    module = _build_model(model, torch_dtype)
    try:
        _check_against_checkpoint(module, directory, model_file)
        log(f"loading {directory} (iteration {iteration})")
        checkpoint.load_weights(load_dir, [module])
        params = {name: p.detach().cpu() for name, p in module.named_parameters()}  # safetensors writes host memory
    finally:
        parallel.destroy()
    with hf_io.atomic_directory(hf_dir) as tmp:
        files = hf_io.write_safetensors(tmp, llama.megatron_to_hf(params, fields), torch_dtype)
        hf_io.write_json(
            os.path.join(tmp, "config.json"), llama.hf_config_from_fields(fields, model.hf_config, torch_dtype)
        )
        tokenizer_files = hf_io.copy_tokenizer_files(tokenizer_dir, tmp) if tokenizer_dir else []
    summary = {
        "hf_dir": hf_dir,
        "iteration": iteration,
        "files": files + ["config.json"] + tokenizer_files,
        "parameters": sum(p.numel() for p in params.values()),
        "seconds": time.time() - start,
    }
    log(
        f"wrote {hf_dir}: {', '.join(summary['files'])} ({summary['parameters'] / 1e6:.1f} M parameters, "
        f"{str(torch_dtype)[6:]}) in {summary['seconds']:.1f} s"
        + ("" if tokenizer_files else "; no tokenizer files copied (pass --tokenizer-dir)")
    )
    return summary
