"""A tiny random LlamaForCausalLM with SmolLM2's real tokenizer, saved as a Hugging Face directory."""

import os
import shutil

import torch

from megatron_ipt import assets


def make_tiny_llama(out_dir: str, seed: int = 0) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    smol = assets.smollm2_hf_dir()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init, so the model has preferences worth comparing
        for p in model.parameters():
            p.mul_(4.0)
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(smol, name), os.path.join(out_dir, name))
    return out_dir
