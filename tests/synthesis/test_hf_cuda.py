"""On CUDA (marked `cuda`: skipped without a GPU; `make gpu-check` runs it): the hf engine on the GPU with a tiny
random Llama (tokenizer trained here): prompts in, one generation or None out per prompt, failures counted; and
tools/synthesize.py end to end with it."""

import json

import pytest

from megatron_ipt.assets import pydoc_topics
from megatron_ipt.formats.wire import cook_context
from megatron_ipt.synthesis.engines import build_engine
from tests.cuda import DEVICE
from tests.evaluation.tiny_llama import make_tiny_llama, train_tiny_tokenizer
from tools.synthesize import main

pytestmark = pytest.mark.cuda
pytest.importorskip("transformers")
MAX_MODEL_LEN = 256


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_llama(str(root / "hf"), tokenizer_dir=train_tiny_tokenizer(str(root / "tokenizer")))


def texts(n, words=30):
    return [" ".join(t.split()[:words]) for t in pydoc_topics()[:n]]


def test_generations_out_failures_counted(tiny):
    engine = build_engine("hf", model=tiny, max_new_tokens=8, batch_size=4, max_model_len=MAX_MODEL_LEN)
    try:
        assert engine.lm.device.type == DEVICE
        too_long = cook_context(" ".join(" ".join(pydoc_topics()).split()[:2000]))
        prompts = [cook_context(t) for t in texts(6)] + [too_long]
        out = engine.generate(prompts)
        usage = engine.usage
        assert len(out) == len(prompts) and out[-1] is None  # the prompt past --max-model-len fails alone
        assert all(o is None or isinstance(o, str) for o in out) and any(out[:-1])
        assert usage.prompts == len(prompts) and usage.failures == out.count(None)
        assert 0 < usage.generated_tokens <= 8 * (len(prompts) - usage.failures)
    finally:
        engine.close()


def test_cli_end_to_end_on_the_gpu(tiny, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts(4))))
    argv = ["--input", str(path), "--output-dir", str(tmp_path / "o"), "--engine", "hf", "--model", tiny]
    argv += ["--rounds", "1", "--max-new-tokens", "8", "--max-model-len", str(MAX_MODEL_LEN)]
    argv += ["--max-failure-rate", "1"]  # plumbing: a random model's odd generation must not stop the run
    assert main(argv) == 0
    assert "texts          4 synthesized" in capsys.readouterr().out
    chains = [json.loads(line) for line in open(tmp_path / "o" / "shard00000-part00000.jsonl")]
    assert sorted(e["context"] for c in chains for e in c) == sorted(texts(4))
    manifest = json.load(open(tmp_path / "o" / "manifest-shard00000.json"))
    assert manifest["engine"] == "hf"
