"""A Hugging Face model directory (config.json + weights + tokenizer files) as an evaluation model, via
transformers, on CPU or one GPU. Generation uses `generate` (KV cache, left padding, greedy)."""

from __future__ import annotations

import os
from typing import List, Sequence

import torch

from megatron_ipt.evaluation.lm import LanguageModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFModel(LanguageModel):
    def __init__(
        self,
        path: str,
        batch_size: int,
        max_length: int = None,
        start_token: str = "auto",
        dtype: str = "auto",
        device: str = None,
    ):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise SystemExit("--hf-model needs the transformers package: pip install transformers") from None

        if not os.path.isfile(os.path.join(path, "config.json")):
            raise SystemExit(f"--hf-model {path}: not a Hugging Face model directory (no config.json)")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        try:  # a downloaded directory is input: bad config values or corrupt weights end in one line
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(self.device).eval()
        except Exception as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise SystemExit(f"--hf-model {path}: cannot load it with transformers: {reason}") from None
        self.name = os.path.abspath(path)
        self.backend = "hf"
        self.layout = {"device": str(self.device), "dtype": dtype}
        self.batch_size = batch_size
        config = self.model.config
        self.max_length = max_length or min(2048, getattr(config, "max_position_embeddings", None) or 2048)
        tok = self.tokenizer
        if start_token == "auto":  # what the tokenizer adds itself (the AdaptLLM harness with add_bos_token=True)
            self.start_ids = list(tok("", add_special_tokens=True)["input_ids"])
        elif start_token == "none":
            self.start_ids = []
        else:
            token = tok.bos_token_id if start_token == "bos" else tok.eos_token_id
            if token is None:
                raise SystemExit(f"--start-token {start_token}: the tokenizer in {path} has no such token")
            self.start_ids = [token]
        self.stop_ids = frozenset(t for t in (tok.eos_token_id,) if t is not None)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def encode_batch(self, texts):
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids):
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def logits(self, tokens):
        with torch.no_grad():
            return self.model(input_ids=tokens.to(self.device)).logits  # rows scored are cast to float32 later

    def greedy(self, prompts: Sequence[List[int]], max_new_tokens: int) -> List[List[int]]:
        results = []
        bar = self.progress_bar(len(prompts), "generate")
        for first in range(0, len(prompts), self.batch_size):
            batch = [list(p) for p in prompts[first : first + self.batch_size]]
            width = max(len(p) for p in batch)
            budgets = [self.generation_budget(len(p), max_new_tokens) for p in batch]
            ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
            new = []
            if max(budgets) > 0:
                with torch.no_grad():
                    out = self.model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=max(budgets),
                        do_sample=False,
                        stop_strings=["\n"],
                        tokenizer=self.tokenizer,
                        pad_token_id=self.pad_id,
                        eos_token_id=sorted(self.stop_ids) or None,
                        temperature=None,
                        top_p=None,
                        top_k=None,
                    )
                new = out[:, width:].tolist()
            for row, budget in enumerate(budgets):
                generated = []
                for token in (new[row] if new else [])[:budget]:
                    if self._append(generated, token, budget):
                        break
                results.append(generated)
            bar.update(len(batch))
        bar.close()
        return results
