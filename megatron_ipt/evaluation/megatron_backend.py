"""Our megatron-core checkpoint as an evaluation model: built by megatron_ipt.training.models.build from a model config
(tools/pretrain.py's model flags, or the checkpoint's model.json), weights loaded (any saved TP/PP layout) by
checkpoint.load_weights.

Parallelism: tensor parallel across the ranks of a TP group (the vocab-parallel logits are gathered, so every
TP rank sees the full vocabulary and makes the same choices), data parallel across TP groups (requests are
dealt round-robin to DP ranks and the results gathered). Pipeline parallelism is not used for evaluation:
the checkpoint reshards to PP=1 on load; split a large model with TP instead. Launch with torchrun for TP/DP>1
(gloo on CPU, NCCL on GPU); a single process needs no launcher.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from megatron_ipt.evaluation.lm import LanguageModel, Request
from megatron_ipt.tokenizers import HUGGINGFACE_TYPES, Tokenizer, TokenizerSpec
from megatron_ipt.training.config import ParallelConfig, PrecisionConfig
from megatron_ipt.training.model_config import ModelConfig


def _single_process_rendezvous() -> None:
    """Let a plain `python tools/evaluate.py` (no torchrun) create its one-process group."""
    if "WORLD_SIZE" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])


@dataclass(frozen=True)
class CheckpointSpec:
    """Our checkpoint to evaluate: its directory, and the model, layout and tokenizer to load it into."""

    load: Optional[str]  # required: MegatronModel says so
    model: ModelConfig
    parallel: ParallelConfig
    precision: PrecisionConfig
    tokenizer: Optional[TokenizerSpec]

    @classmethod
    def from_args(cls, args) -> "CheckpointSpec":
        """tools/evaluate.py's flags: --load plus tools/pretrain.py's model, parallelism, precision and tokenizer
        flags. A checkpoint directory describes itself: its model.json (tools/pretrain.py --save,
        tools/convert_checkpoint.py) stands for --model, and its tokenizer/ (converted models) for the tokenizer."""
        from megatron_ipt.training import checkpoint

        load, implied, default_model = args.load, [], None  # None: --model, else the shape flags describe it
        model_file = os.path.join(load or "", checkpoint.MODEL_FILE)
        if load and args.model is None and os.path.isfile(model_file):
            default_model = model_file
            implied += ["--model", model_file]
        tokenizer = TokenizerSpec.from_args(args)
        tokenizer_dir = os.path.join(load or "", "tokenizer")
        if load and tokenizer is None and os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
            tokenizer = TokenizerSpec("HuggingFaceTokenizer", tokenizer_dir, native=not args.no_native_tokenizer)
            implied += ["--tokenizer-type", tokenizer.type, "--tokenizer-model", tokenizer_dir]
        if implied and int(os.environ.get("RANK", 0)) == 0:
            print(f"from {load} (its model.json / tokenizer/): {' '.join(implied)}", flush=True)
        return cls(
            load=load,
            model=ModelConfig.from_args(args, default_model),
            parallel=ParallelConfig.from_args(args),
            precision=PrecisionConfig.from_args(args),
            tokenizer=tokenizer,
        )


def start_ids_for(tokenizer_type: str, start_token: str, tokenizer: Tokenizer) -> List[int]:
    """The ids put before every prompt. `auto`: what pre-training put at a document's start with this tokenizer (our
    packer: nothing for SentencePiece and tiktoken types, the tokenizer's own special tokens, e.g. Llama-3's BOS, for
    Hugging Face types)."""
    if start_token == "auto":
        return tokenizer.special_ids_of_empty_text() if tokenizer_type in HUGGINGFACE_TYPES else []
    if start_token == "none":
        return []
    token = tokenizer.bos if start_token == "bos" else tokenizer.eod
    if token is None:
        raise SystemExit(f"--start-token {start_token}: the tokenizer {tokenizer.model_path} has no such token")
    return [token]


class MegatronModel(LanguageModel):
    def __init__(self, spec: CheckpointSpec, batch_size: int, max_length: int = None, start_token: str = "auto"):
        from megatron.core import parallel_state

        from megatron_ipt.training import checkpoint, models

        if spec.parallel.pipeline_model_parallel_size != 1:
            raise SystemExit(
                "evaluation runs at --pipeline-model-parallel-size 1 (the checkpoint reshards on "
                "load from any TP/PP); use --tensor-model-parallel-size to split a large model"
            )
        if not spec.load:
            raise SystemExit(
                "--load DIR is required (a checkpoint directory written by tools/pretrain.py or "
                "tools/convert_checkpoint.py), or give --hf-model DIR"
            )
        if spec.tokenizer is None:
            raise SystemExit("--tokenizer-model is required (or a --load directory holding tokenizer/)")
        try:  # before the model, so a wrong tokenizer flag fails fast; prompts are encoded without special tokens
            self.tokenizer = dataclasses.replace(spec.tokenizer, include_special_tokens=False).build()
        except (ValueError, OSError) as error:
            raise SystemExit(str(error)) from None
        model = spec.model
        if self.tokenizer.vocab_size > model.vocab_size:
            raise SystemExit(
                f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model --vocab-size is {model.vocab_size}"
            )
        _single_process_rendezvous()
        try:  # every parameter comes from the checkpoint
            chunks, _ = models.build(model, spec.parallel, spec.precision, initialize_weights=False)
        except ValueError as error:  # e.g. heads not divisible by the TP size
            raise SystemExit(f"model flags: {error}") from None
        self.model = chunks[0]
        self.iteration = checkpoint.load_weights(spec.load, [self.model])
        if self.iteration is None:
            raise SystemExit(f"--load {spec.load}: no checkpoint there (no {checkpoint.MARKER})")
        self.model.eval()
        self.name = os.path.abspath(spec.load)
        self.backend = "megatron"
        self.vocab_size = model.vocab_size
        self.batch_size = batch_size
        self.max_length = max_length or min(2048, model.max_position_embeddings)
        self.start_ids = start_ids_for(spec.tokenizer.type, start_token, self.tokenizer)
        self.stop_ids = frozenset(t for t in (self.tokenizer.eod,) if t is not None)
        self.device = (
            torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        )
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_group = parallel_state.get_data_parallel_group()
        self.is_writer = torch.distributed.get_rank() == 0
        self.layout = {
            "tensor_model_parallel_size": spec.parallel.tensor_model_parallel_size,
            "data_parallel_size": self.dp_size,
        }

    def encode_batch(self, texts):
        return self.tokenizer.encode_batch(list(texts))

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def _forward(self, tokens, start: int = 0, context=None):
        """Logits of tokens at positions start.. (the whole sequence, or one window of a KV-cached pass)."""
        tokens = tokens.to(self.device)
        end = start + tokens.shape[1]
        positions = torch.arange(start, end, device=self.device).unsqueeze(0).expand_as(tokens)
        mask = torch.ones(1, 1, end, end, dtype=torch.bool, device=self.device).triu(1)[:, :, start:end, :end]
        with torch.no_grad():
            out = self.model(tokens, positions, mask, inference_context=context, runtime_gather_output=True)
        return out[..., : self.vocab_size]  # the model's dtype: only the rows scored are cast to float32

    def logits(self, tokens):
        return self._forward(tokens)

    def _kv_greedy(self, prompts: Sequence[List[int]], max_new_tokens: int) -> List[List[int]]:
        """Greedy generation with megatron-core's static KV cache: the batch is prefilled up to its shortest
        prompt, then advanced one position at a time; a row still inside its prompt takes its prompt token,
        a row past it takes the argmax (megatron's static-batching scheme)."""
        from megatron.core.inference.contexts import StaticInferenceContext

        results = []
        bar = self.progress_bar(len(prompts), "generate")
        for first in range(0, len(prompts), self.batch_size):
            batch = [list(p) for p in prompts[first : first + self.batch_size]]
            budgets = [self.generation_budget(len(p), max_new_tokens) for p in batch]
            total = max(len(p) + b for p, b in zip(batch, budgets))
            tokens = torch.tensor([p + [0] * (total - len(p)) for p in batch], dtype=torch.long)
            context = StaticInferenceContext(len(batch), total)
            longest = max(len(p) for p in batch)
            generated: List[List[int]] = [[] for _ in batch]
            done = [b == 0 for b in budgets]
            start, end = 0, min(len(p) for p in batch)
            while not all(done) and start < end:
                logits = self._forward(tokens[:, start:end], start, context)
                context.increment_sequence_len_offset(end - start)
                choice = logits[:, -1].argmax(-1).tolist()
                for row, prompt in enumerate(batch):
                    if done[row] or end < len(prompt):
                        continue
                    done[row] = self._append(generated[row], choice[row], budgets[row])
                    if end < total:
                        tokens[row, end] = choice[row]
                start, end = end, min(end + 1, total)
                if end > longest:  # every row is generating now (megatron's controller does the same)
                    context.enable_decode_mode()
            results += generated
            bar.update(len(batch))
        bar.close()
        return results

    # -- data parallel: deal requests to DP ranks, gather the results --------------------------------------------

    def _gather(self, mine: list, n: int) -> list:
        parts = [None] * self.dp_size
        torch.distributed.all_gather_object(parts, mine, group=self.dp_group)
        results = [None] * n
        for rank, part in enumerate(parts):
            results[rank :: self.dp_size] = part
        return results

    def continuation_nlls(self, requests: Sequence[Request]) -> List[List[float]]:
        return self._gather(super().continuation_nlls(list(requests)[self.dp_rank :: self.dp_size]), len(requests))

    def greedy(self, prompts, max_new_tokens):
        return self._gather(self._kv_greedy(list(prompts)[self.dp_rank :: self.dp_size], max_new_tokens), len(prompts))

    def close(self) -> None:
        from megatron_ipt.training import parallel

        parallel.destroy()
