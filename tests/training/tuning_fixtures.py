"""Tuning data for the tests: real text in the synthesizer's wire format, packed two examples a sequence, written as
the P_text_document / P_loss_mask_document pair that tools/build_tuning_data.py writes (megatron_ipt.formats.indexed)."""

from megatron_ipt import assets
from megatron_ipt.formats import wire
from megatron_ipt.formats.indexed import IndexedDatasetWriter
from megatron_ipt.tokenizers import build_tokenizer


def examples(n: int):
    """(context, pairs) from Opticks paragraphs: the question asks for the paragraph's first words."""
    out = []
    for text in assets.opticks_paragraphs()[:n]:
        words = text.split()
        context = " ".join(words[:12])
        out.append((context, [{"Q": "How does the text begin?", "A": " ".join(words[:4])}]))
    return out


def encode_example(tok, context, pairs):
    """Token ids and 0/1 loss mask of one example: the context carries none, the pairs and </s> all."""
    head = tok.encode(wire.cook_context(context))
    tail = tok.encode(wire.cook_pairs(pairs) + wire.EOS)
    return head + tail, [0] * len(head) + [1] * len(tail)


def make_tuning(prefix: str, n_examples: int = 24, per_sequence: int = 2, seq_length: int = 128) -> str:
    """Writes `prefix`_text_document / `prefix`_loss_mask_document; returns the text prefix (for --data-path)."""
    tok = build_tokenizer("SentencePieceTokenizer", assets.mistral_tokenizer_model())
    encoded = [encode_example(tok, c, p) for c, p in examples(n_examples)]
    text = IndexedDatasetWriter(prefix + "_text_document", vocab_size=tok.vocab_size)
    mask = IndexedDatasetWriter(prefix + "_loss_mask_document", dtype_code=1)
    for start in range(0, len(encoded), per_sequence):
        ids, bits = [], []
        for example_ids, example_bits in encoded[start : start + per_sequence]:
            ids += example_ids
            bits += example_bits
        ids, bits = ids[: seq_length + 1], bits[: seq_length + 1]
        text.add_documents([ids])
        mask.add_documents([bits])
    text.finalize()
    mask.finalize()
    return prefix + "_text_document"
