"""The one interface evaluation needs from a model, and the scoring maths every backend shares.

A backend (hf_backend.HFModel, megatron_backend.MegatronModel) provides tokenization and `logits(tokens)`;
the continuation NLLs are computed here, once, so two backends on the same weights give the same numbers.
Greedy generation has a reference implementation here (the whole sequence recomputed per new token) that
backends replace with a KV-cached one and are tested against.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

Request = Tuple[List[int], List[int]]  # (context ids, continuation ids)


class LanguageModel:
    """Set by subclasses: `name`, `max_length` (longest sequence scored), `start_ids` (tokens put before every
    prompt, e.g. BOS), `stop_ids` (tokens that end a generation, e.g. EOS), `batch_size`, `iteration` (of a
    checkpoint, or None) and `is_writer` (the one process that prints and writes outputs)."""

    name: str
    backend: str
    max_length: int
    start_ids: List[int]
    stop_ids: frozenset = frozenset()
    batch_size: int = 8
    iteration: Optional[int] = None
    is_writer: bool = True
    layout: Dict[str, object] = {}  # how the model runs (devices, parallel sizes), for the report

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text, without special tokens."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, seq] token ids (right-padded) -> [batch, seq, vocab] logits (any float dtype) over the model's
        real vocabulary (no padding rows). Padding on the right does not change earlier positions (causal)."""
        raise NotImplementedError

    def continuation_nlls(self, requests: Sequence[Request]) -> List[List[float]]:
        """For each (context, continuation): the negative log-likelihood of every continuation token given all
        tokens before it. Batched longest first, so a batch's padding is small."""
        results: List[Optional[List[float]]] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))
        bar = self.progress_bar(len(requests), "score")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            sequences = [requests[i][0] + requests[i][1] for i in batch]
            logits = self.logits(_right_pad(sequences))
            for row, i in enumerate(batch):
                context, continuation = requests[i]
                # position t predicts token t + 1
                rows = logits[row, len(context) - 1 : len(context) - 1 + len(continuation)].float()
                targets = torch.tensor(continuation, device=rows.device)
                nll = -torch.log_softmax(rows, dim=-1).gather(1, targets[:, None]).squeeze(1)
                results[i] = nll.tolist()
            bar.update(len(batch))
        bar.close()
        return results

    def greedy(self, prompts: Sequence[List[int]], max_new_tokens: int) -> List[List[int]]:
        """Greedy continuation of each prompt: at most `max_new_tokens` and never past `max_length`, ending
        after the first token whose text holds a newline, or before a stop id. Reference implementation:
        the full sequences are recomputed for every new token."""
        results: List[Optional[List[int]]] = [None] * len(prompts)
        for start in range(0, len(prompts), self.batch_size):
            batch = list(range(start, min(start + self.batch_size, len(prompts))))
            sequences = [list(prompts[i]) for i in batch]
            budgets = [self.generation_budget(len(s), max_new_tokens) for s in sequences]
            generated: List[List[int]] = [[] for _ in batch]
            done = [b == 0 for b in budgets]
            while not all(done):
                logits = self.logits(_right_pad(sequences))
                for row in range(len(batch)):
                    if done[row]:
                        continue
                    token = int(logits[row, len(sequences[row]) - 1].argmax())
                    done[row] = self._append(generated[row], token, budgets[row])
                    sequences[row].append(token)
            for row, i in enumerate(batch):
                results[i] = generated[row]
        return results

    def close(self) -> None:
        """Release what the backend holds (process groups)."""

    # -- helpers for backends --------------------------------------------------------------------------------

    def progress_bar(self, total: int, desc: str):
        """A tqdm bar on the writer's terminal; silent elsewhere (each task still logs one line when done)."""
        from tqdm import tqdm

        return tqdm(
            total=total, desc=desc, unit="seq", leave=False, disable=not (self.is_writer and sys.stderr.isatty())
        )

    def generation_budget(self, prompt_length: int, max_new_tokens: int) -> int:
        return max(0, min(max_new_tokens, self.max_length - prompt_length))

    def _append(self, generated: List[int], token: int, budget: int) -> bool:
        """Add a generated token; True when the generation is finished."""
        if token in self.stop_ids:
            return True
        generated.append(token)
        return self.has_newline(token) or len(generated) >= budget

    def has_newline(self, token: int) -> bool:
        cache = self.__dict__.setdefault("_newline_cache", {})
        if token not in cache:
            cache[token] = "\n" in self.decode([token])
        return cache[token]


def _right_pad(sequences: Sequence[Sequence[int]], pad: int = 0) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad] * (width - len(s)) for s in sequences], dtype=torch.long)
