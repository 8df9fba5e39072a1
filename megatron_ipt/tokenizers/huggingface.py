"""`HuggingFaceTokenizer` (alias `Llama3Tokenizer`): a `tokenizer.json` (or a directory holding one), encoded with
the tokenizer's special tokens (e.g. Llama's BOS) unless `include_special_tokens=False` (Megatron's
`--tokenizer-hf-no-include-special-tokens`); EOD is `eos_token` from `tokenizer_config.json`."""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

from megatron_ipt.errors import ConfigError
from megatron_ipt.tokenizers.base import ByteLevelTokenizer
from megatron_ipt.tokenizers.sentencepiece import is_sentencepiece_model

HUGGINGFACE_TYPES = ("HuggingFaceTokenizer", "Llama3Tokenizer")

# Tried in order when a tokenizer.json comes without a tokenizer_config.json naming its eos_token.
_COMMON_EOS_TOKENS = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>")


class HuggingFaceTokenizer(ByteLevelTokenizer):
    library_name = "tokenizers"

    def __init__(
        self,
        model_path: str,
        tokenizer_type: str = "HuggingFaceTokenizer",
        include_special_tokens: bool = True,
        num_threads: int = 1,
        native: bool = True,
    ):
        import tokenizers

        from megatron_ipt.tokenizers.bytelevel import native_from_tokenizer_json

        json_path = os.path.join(model_path, "tokenizer.json") if os.path.isdir(model_path) else model_path
        if not os.path.isfile(json_path):
            raise FileNotFoundError(
                f"{json_path}: no tokenizer.json (HuggingFaceTokenizer needs a tokenizer.json or a directory holding one)"
            )
        self.tokenizer_type = tokenizer_type
        self.model_path = model_path
        self.include_special_tokens = include_special_tokens
        try:
            self._tok = tokenizers.Tokenizer.from_file(json_path)
        except Exception as e:  # the library's own message ("stream did not contain valid UTF-8", ...) names no file
            if is_sentencepiece_model(json_path):  # what Megatron-LM's docs give HuggingFaceTokenizer
                raise ConfigError(
                    f"--tokenizer-model {json_path} is a SentencePiece model, not a tokenizer.json: give it with "
                    f"--tokenizer-type SentencePieceTokenizer (or Llama2Tokenizer/MistralTokenizer: the same ids), or "
                    f"give HuggingFaceTokenizer the model's Hugging Face directory (the one holding tokenizer.json)"
                ) from None
            raise ConfigError(
                f"--tokenizer-model {json_path}: not a tokenizer.json the tokenizers library reads ({e})"
            ) from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        config = _read_tokenizer_config(os.path.dirname(os.path.abspath(json_path)))
        self.eod = self._token_id(config.get("eos_token"), _COMMON_EOS_TOKENS)
        self.bos = self._token_id(config.get("bos_token"), ("<s>", "<|begin_of_text|>", "<bos>"))
        self.num_threads = num_threads
        if native:
            with open(json_path, encoding="utf-8") as f:
                self._use_native(*native_from_tokenizer_json(json.load(f), self._tok, include_special_tokens))

    def _token_id(self, configured, fallbacks) -> Optional[int]:
        if isinstance(configured, dict):  # {"content": "</s>", ...} in older tokenizer_config.json files
            configured = configured.get("content")
        for token in [configured] if configured else list(fallbacks):
            token_id = self._tok.token_to_id(token)
            if token_id is not None:
                return token_id
        return None

    def _library_encode(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=self.include_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        if self._native is not None:
            return super().encode_batch(texts)
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=self.include_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def special_ids_of_empty_text(self) -> List[int]:
        """What the tokenizer's special tokens make of an empty text (e.g. Llama-3's BOS), whatever
        include_special_tokens says: what encoding with them puts around every document."""
        return self._tok.encode("", add_special_tokens=True).ids

    @property
    def unique_identifiers(self) -> dict:
        return {**super().unique_identifiers, "include_special_tokens": self.include_special_tokens}


def _read_tokenizer_config(directory: str) -> dict:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as e:  # not JSON (or not UTF-8): the message as json gives it
            raise ConfigError(str(e)) from e
