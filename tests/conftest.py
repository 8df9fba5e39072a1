import json
import os

import pytest

from megatron_ipt import assets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def mistral_model() -> str:
    return assets.mistral_tokenizer_model()


@pytest.fixture(scope="session")
def real_texts() -> list:
    """Real English text nobody here wrote: CPython's pydoc topics and Newton's Opticks paragraphs."""
    return assets.pydoc_topics() + assets.opticks_paragraphs()


def damaged_sentencepiece_models(model: str, directory) -> dict:
    """name -> path of broken copies of the real SentencePiece `model` (issue 25): bytes flipped, truncated, header
    zeroed, empty, another format; and a directory (holding the model) where the file belongs."""
    data = open(model, "rb").read()
    middle = len(data) // 2
    variants = {
        "flipped": data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :],
        "truncated": data[:middle],
        "header-zeroed": bytes(16) + data[16:],
        "empty": b"",
        "json": b'{"model": "not sentencepiece"}\n',
    }
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, content in variants.items():
        paths[name] = os.path.join(directory, f"{name}.model")
        with open(paths[name], "wb") as f:
            f.write(content)
    paths["directory"] = os.path.join(directory, "a-directory")
    os.makedirs(paths["directory"], exist_ok=True)
    with open(os.path.join(paths["directory"], "tokenizer.model"), "wb") as f:
        f.write(data)
    return paths


@pytest.fixture(scope="session")
def broken_tokenizer_models(mistral_model, tmp_path_factory) -> dict:
    return damaged_sentencepiece_models(mistral_model, str(tmp_path_factory.mktemp("broken-tokenizers")))


def one_error_line(result, *parts: str) -> str:
    """A tool's failed run (a CompletedProcess): exit status != 0, exactly one `error: ` line, naming `parts`, and no
    traceback; returns the line."""
    out = result.stdout + result.stderr
    lines = [line for line in out.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(lines) == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def write_jsonl(path, records, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(path)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip where CUDA is absent (tests/cuda.py)."""
    from tests.cuda import skip_reason

    reason = skip_reason()
    if reason:
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
