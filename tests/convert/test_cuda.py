"""On CUDA (marked `cuda`: skipped without a GPU; `make gpu-check` runs it): a tiny random Llama converted by the
converter (which builds the model on the GPU) gives transformers' logits, both computed on the GPU in float32, at
TP=1 (and TP=2 where there are two GPUs)."""

import json

import pytest
import torch

from tests.cuda import DEVICE, needs
from tests.launch import run

pytestmark = pytest.mark.cuda
transformers = pytest.importorskip("transformers")
from tests.convert.test_convert_tiny import COMMON, LOGITS_TOLERANCE, SEQ, VARIANTS  # noqa: E402

NAME = "llama-gqa-untied"  # GQA, untied output layer, sharded safetensors: the CPU test's first variant


@pytest.mark.parametrize("tp", [pytest.param(1), pytest.param(2, marks=needs(2))])
def test_hf_to_ours_logits_match_on_the_gpu(tmp_path, tp):
    config_class, kwargs, _ = VARIANTS[NAME]
    torch.manual_seed(0)
    tokens = torch.randint(0, kwargs["vocab_size"], (2, SEQ))
    torch.save(tokens, tmp_path / "tokens.pt")
    model = transformers.AutoModelForCausalLM.from_config(config_class(**COMMON, **kwargs)).eval()
    model.save_pretrained(tmp_path / "hf", max_shard_size="60KB")
    with torch.no_grad():
        reference = model.to(DEVICE)(tokens.to(DEVICE)).logits.cpu()
    ck = tmp_path / "ck"
    run("tests/convert/convert_jobs.py", json.dumps([["import", str(tmp_path / "hf"), str(ck), tp, 128]]))
    run("tests/convert/megatron_logits.py", tmp_path / "tokens.pt", f"{tp}x1", ck, nproc=tp)
    ours = torch.load(ck / f"logits_tp{tp}_pp1.pt")
    vocab = reference.shape[-1]
    assert reference.abs().max() > 1.0  # not a degenerate near-uniform model
    torch.testing.assert_close(ours[..., :vocab], reference, **LOGITS_TOLERANCE)
    assert torch.count_nonzero(ours[..., vocab:]) == 0  # padded vocabulary rows are zeros
