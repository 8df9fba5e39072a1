"""The model presets: data, one dict of model fields each (`--model NAME`). A test loads every preset
(tests/training/test_training.py); the Megatron-LM flags accepted without a field of their own are next door, in
megatron_flags.py."""

from __future__ import annotations

from typing import Dict

# The blocks every preset builds (Llama/Mistral-style): what a Megatron-LM script says with --normalization RMSNorm
# --swiglu --disable-bias-linear --position-embedding-type rope --attention-dropout 0 --hidden-dropout 0.
MISTRAL_STYLE = dict(
    normalization="RMSNorm",
    swiglu=True,
    add_bias_linear=False,
    position_embedding_type="rope",
    attention_dropout=0.0,
    hidden_dropout=0.0,
)

# Model presets. InstructLM shapes are our choice (the paper gives only parameter counts): Mistral-style blocks
# (RMSNorm, SwiGLU, RoPE theta 10000, Mistral 32k vocab, untied embeddings). Every preset unties the output layer
# (Megatron's default is tied; `--untie-embeddings-and-output-weights` as in Megatron-LM).
PRESETS: Dict[str, dict] = {
    "tiny": dict(
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=176,
        num_attention_heads=4,
        num_query_groups=2,
        seq_length=64,
        max_position_embeddings=64,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
        **MISTRAL_STYLE,
    ),
    "instructlm-500m": dict(
        num_layers=24,
        hidden_size=1280,
        ffn_hidden_size=3456,
        num_attention_heads=20,
        num_query_groups=20,
        seq_length=2048,
        max_position_embeddings=2048,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
        **MISTRAL_STYLE,
    ),
    "instructlm-1.3b": dict(
        num_layers=24,
        hidden_size=2048,
        ffn_hidden_size=5632,
        num_attention_heads=16,
        num_query_groups=16,
        seq_length=2048,
        max_position_embeddings=2048,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
        **MISTRAL_STYLE,
    ),
    "llama3-8b": dict(
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=14336,
        num_attention_heads=32,
        num_query_groups=8,
        seq_length=8192,
        max_position_embeddings=8192,
        rotary_base=500000,
        vocab_size=128256,
        untie_embeddings_and_output_weights=True,
        **MISTRAL_STYLE,
    ),
    "mistral-7b": dict(
        num_layers=32,
        hidden_size=4096,
        ffn_hidden_size=14336,
        num_attention_heads=32,
        num_query_groups=8,
        seq_length=4096,
        max_position_embeddings=32768,
        rotary_base=10000,
        vocab_size=32000,
        untie_embeddings_and_output_weights=True,
        **MISTRAL_STYLE,
    ),
}
