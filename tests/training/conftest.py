import pytest

from megatron_ipt import assets
from tests.training.make_data import make


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """120 paragraphs of Newton's Opticks (a fixed text, unlike the pydoc topics, which change with each Python
    release), Mistral-tokenized, as a Megatron dataset: the golden values below depend on it."""
    prefix = str(tmp_path_factory.mktemp("data") / "opticks_text_document")
    return make(prefix, assets.opticks_paragraphs()[:120], assets.mistral_tokenizer_model())


@pytest.fixture(scope="session")
def pydoc(tmp_path_factory):
    """A second data source of another kind of text (CPython reference documents), for blends."""
    prefix = str(tmp_path_factory.mktemp("data") / "pydoc_text_document")
    return make(prefix, assets.pydoc_topics()[:40], assets.mistral_tokenizer_model())
