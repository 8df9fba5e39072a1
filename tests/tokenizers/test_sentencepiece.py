"""Our native SentencePiece BPE encoder must give the sentencepiece library's ids, or step aside."""

import io
import logging
import random

import pytest
import sentencepiece as spm

from megatron_ipt import _native
from megatron_ipt.tokenizers import build_tokenizer

ADVERSARIAL = [
    "",
    " ",
    "  ",
    "\n",
    "\t\t",
    "a",
    "Hello  world\n\tüñî 😀 1234",
    "  leading spaces",
    "trailing spaces   ",
    " " * 300 + "x" + " " * 301,
    "\n\n\n \n \t \r\n",
    "<s> literal control pieces </s> and <unk> and <0x0A>",
    "▁ already escaped ▁▁▁ spaces",
    "▁",
    "mixed scripts: English, Ελληνικά, русский, العربية, עברית, हिन्दी, 中文, 日本語, 한국어, ไทย",
    "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🇫🇷 ✊🏿 🫠",
    "combining: e\u0301 a\u0308 n\u0303 \u0301\u0301\u0301",
    "controls \x00 \x01 \x07 \x1b[31m \x7f \u200b \u200d \ufeff \u2028 \ufffd",
    "private use \ue000\uf8ff and planes \U0001f600 \U00010348 \U000e0001 \U0010ffff",
    "digits 0123456789 ٠١٢٣ १२३ 3.14159e-10 1,000,000",
    "x" * 10000,
    "supercalifragilistic" * 200,
    "ab" * 3000 + " " + "😀" * 500,
    "https://example.org/a?b=c&d=%20#frag",
    "def f(x):\n    return x**2  # comment\n",
    "CamelCaseIdentifiersAndSNAKE_CASE_ONES",
    "tab\tseparated\tvalues\n1\t2\t3",
]


def random_unicode(rng: random.Random, n: int) -> str:
    ranges = [
        (0x20, 0x7E),
        (0x00, 0x1F),
        (0xA0, 0x24F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x590, 0x6FF),
        (0x900, 0x97F),
        (0x2000, 0x206F),
        (0x2580, 0x259F),
        (0x3040, 0x30FF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3),
        (0xE000, 0xF8FF),
        (0xFE00, 0xFFFD),
        (0x1F300, 0x1FAFF),
        (0x10000, 0x10FFFF),
    ]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:
            c = 0x20
        out.append(" " if rng.random() < 0.15 else chr(c))
    return "".join(out)


@pytest.fixture(scope="module")
def library(mistral_model):
    return spm.SentencePieceProcessor(model_file=mistral_model)


@pytest.fixture(scope="module")
def native(mistral_model):
    return _native.SentencePieceBPE(mistral_model)


def assert_same_ids(native, library, texts):
    ours, theirs = native.encode(texts), library.encode(texts, out_type=int)
    for text, a, b in zip(texts, ours, theirs):
        assert a == b, f"ids differ for {text[:80]!r}"


def test_real_text(native, library, real_texts):
    assert_same_ids(native, library, real_texts)


def test_adversarial_text(native, library):
    assert_same_ids(native, library, ADVERSARIAL)


def test_fuzz_random_unicode(native, library):
    rng = random.Random(1234)
    texts = [random_unicode(rng, rng.randint(0, 200)) for _ in range(3000)]
    assert_same_ids(native, library, texts)


def test_threads_and_flat_output_agree(native, library, real_texts):
    texts = real_texts * 3
    one = native.encode(texts, 1)
    assert native.encode(texts, 2) == one
    tokens, lengths = native.encode_flat(texts, 2, 2)
    at = 0
    for ids, n in zip(one, lengths.tolist()):
        assert tokens[at : at + n].tolist() == (ids + [2] if ids else [])
        at += n
    assert at == len(tokens)


def test_unit_cache_refills_exactly_when_full(mistral_model, library, real_texts):
    # more distinct units than the per-thread cache holds (524,288), and units long enough for its arenas: the
    # cache empties and refills mid-batch; ids before, during and after stay the library's
    native = _native.SentencePieceBPE(mistral_model)
    before = native.encode(real_texts)
    rng = random.Random(5)
    words = [f"{i:x}{rng.choice('gqz')}" for i in range(600_000)]
    texts = [" ".join(words[k : k + 1000]) for k in range(0, len(words), 1000)]
    texts += ["-" * rng.randint(17, 300) + "x" * rng.randint(1, 40) for _ in range(2000)]
    ours = native.encode(texts)
    sample = list(range(0, len(texts), 37)) + list(range(len(texts) - 50, len(texts)))
    assert [ours[i] for i in sample] == library.encode([texts[i] for i in sample], out_type=int)
    assert native.encode(real_texts) == before


def test_lone_surrogate_is_rejected_like_the_library(native, library):
    with pytest.raises(UnicodeEncodeError):
        native.encode(["ok", "bad \ud800"])
    with pytest.raises(TypeError):
        library.encode(["ok", "bad \ud800"], out_type=int)


def train_model(texts, **options) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=600,
        character_coverage=0.98,
        minloglevel=2,
        **options,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory, real_texts):
    root = tmp_path_factory.mktemp("spm")
    specs = {
        # no byte fallback: unknown characters become <unk>, and runs of them merge into one
        "bpe_unk_userdefined": dict(
            model_type="bpe",
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            user_defined_symbols=["<sep>", "@@", "the"],
            byte_fallback=False,
        ),
        # the same without user-defined symbols: the encoder's one-pass path (escape + split fused), <unk> runs
        "bpe_unk": dict(
            model_type="bpe",
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            byte_fallback=False,
        ),
        "bpe_byte_fallback_no_dummy": dict(
            model_type="bpe",
            normalization_rule_name="identity",
            byte_fallback=True,
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
        ),
        "bpe_nfkc": dict(model_type="bpe"),  # NFKC normalizer + whitespace folding: library fallback
        "unigram": dict(model_type="unigram", normalization_rule_name="identity", remove_extra_whitespaces=False),
    }
    paths = {}
    for name, options in specs.items():
        paths[name] = str(root / f"{name}.model")
        with open(paths[name], "wb") as f:
            f.write(train_model(real_texts[:200], **options))
    return paths


@pytest.mark.parametrize("name", ["bpe_unk_userdefined", "bpe_unk", "bpe_byte_fallback_no_dummy"])
def test_trained_bpe_models_are_native_and_exact(trained_models, name, real_texts):
    path = trained_models[name]
    native, library = _native.SentencePieceBPE(path), spm.SentencePieceProcessor(model_file=path)
    rng = random.Random(7)
    texts = real_texts + ADVERSARIAL + [random_unicode(rng, rng.randint(0, 120)) for _ in range(1500)]
    texts += ["<sep>the@@ <sep><sep> @@@ thethe the", "x<sep>y", "日本語 ????? 中文"]
    assert_same_ids(native, library, texts)
    ids = {i for seq in library.encode(texts, out_type=int) for i in seq}
    if name == "bpe_unk_userdefined":  # the cases this model exists for do occur
        assert library.unk_id() in ids and library.piece_to_id("<sep>") in ids
    if name == "bpe_unk":
        assert library.unk_id() in ids


@pytest.mark.parametrize("name", ["bpe_nfkc", "unigram"])
def test_unsupported_models_fall_back_to_the_library_and_say_so(trained_models, name, real_texts, caplog):
    with pytest.raises(ValueError, match="unsupported: "):
        _native.SentencePieceBPE(trained_models[name])
    with caplog.at_level(logging.WARNING, logger="megatron_ipt.tokenizers"):
        tokenizer = build_tokenizer("SentencePieceTokenizer", trained_models[name])
    assert not tokenizer.native
    assert "native encoder not used" in caplog.text and "using the sentencepiece library" in caplog.text
    library = spm.SentencePieceProcessor(model_file=trained_models[name])
    assert tokenizer.encode_batch(real_texts[:50]) == library.encode(real_texts[:50], out_type=int)


def test_mistral_model_is_native(mistral_model):
    assert build_tokenizer("MistralTokenizer", mistral_model).native
