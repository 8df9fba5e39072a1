"""A real model: SmolLM2-135M-Instruct (Llama architecture, GQA 9/3 heads, tied embeddings, vocab 49152, rope theta
1e5) converted from its HF weights gives the same logits in our megatron-core model as in transformers, on real text."""

import pytest
import torch

from megatron_ipt import assets
from tests.launch import run

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # ~45 s: conversion of 135M parameters, two forward passes on 2 x 128 tokens

SEQ = 128
# float32 through 30 layers: measured max |diff| 1.2e-4 on logits up to ~36, mean NLL equal to 1e-6
MAX_ABS_DIFF = 1e-3
NLL_DIFF = 1e-4


def nll(logits, tokens):
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten()).item()


def test_smollm2_logits_match_transformers(smollm2_checkpoint, tmp_path):
    hf_dir, checkpoint = smollm2_checkpoint
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    texts = [" ".join(assets.opticks_paragraphs()[5:10]), assets.pydoc_topics()[3]]
    tokens = torch.tensor([tokenizer(t).input_ids[:SEQ] for t in texts])
    torch.save(tokens, tmp_path / "tokens.pt")
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        reference = model(tokens).logits
    run("tests/convert/megatron_logits.py", tmp_path / "tokens.pt", "1x1", checkpoint, nproc=1)
    ours = torch.load(checkpoint / "logits_tp1_pp1.pt")
    assert ours.shape == reference.shape  # 49152 = 384 x 128: no vocabulary padding
    assert (ours - reference).abs().max() < MAX_ABS_DIFF
    assert abs(nll(ours, tokens) - nll(reference, tokens)) < NLL_DIFF
    assert (ours.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.99
    assert nll(reference, tokens) < 4.5  # a trained model on real text (a random one is ~ln(49152) = 10.8)
