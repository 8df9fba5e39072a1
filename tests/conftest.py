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
