"""The engine interface: ``generate(prompts) -> list[str | None]``, one generation per wire-format prompt.

A generation is the text produced after the prompt (pairs in the QA_TEMPLATE format, ending with </END>), or
None when that item failed (the engine did not answer); a failed item never raises (rounds.py counts it, records
it for ``--resume`` and the run goes on). An answer that parses to zero pairs is no failure: the text is kept
without pairs. An empty answer is a failure for the model engines (``empty_answer_fails``: a model that answers
nothing, e.g. a server's empty completion, did not do the work) and an answer for the rules engine (a text it
finds nothing to mine in, which no retry changes).
Sampling settings (``max_new_tokens``, ``temperature``) are fixed when the engine is built, so every call of a
run samples the same way. Every engine also offers:

- ``count_tokens(prompt)``: the prompt's length as the model will see it (after ``--prompt-style``), for the
  length guard and the long-text split. The model's tokenizer when the engine has one (hf, vllm) or one was
  given (``--tokenizer``); otherwise the paper's whitespace words x 1.5.
- ``usage``: prompts, failures, prompt and generated tokens, seconds spent in ``generate``; tokens are the
  model's own counts where it reports them (hf, vllm, openai), else ``count_tokens`` of the texts. Where the
  engine reports prefix-cache hits (vllm; openai when the server sends ``prompt_tokens_details``), the prompt
  tokens served from the cache and the number of generations that reported them.
- ``on_progress``: called with the number of prompts just finished, as they finish.
- ``agenerate(prompt)`` (a coroutine, run with ``run(coroutine)`` on the engine's own event loop): one
  generation, for the pipelined schedule (rounds.synthesize_part). Engines with an async path of their own
  (openai) override it; the others get ``batching.BatchingAdapter``, which batches the prompts asked meanwhile
  into ``generate`` calls (hf: one length-sorted batch of ``--batch-size`` at a time, refilled between
  batches). ``max_in_flight``: the engine's default bound on generations asked and unanswered.

Each engine is built from its own frozen settings dataclass (``Engine.Settings``: ``RulesSettings``,
``HFSettings``, ``VLLMSettings``, ``OpenAISettings``), whose engine-specific fields declare their command-line
flags (megatron_ipt/flags.py); ``build_engine`` (engines/__init__.py) refuses a setting the engine does not have,
naming it.
"""

import asyncio
import logging
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import List, Optional

from megatron_ipt.tokenizers import TokenizerSpec

from ..prompting import PromptStyle
from .batching import DEFAULT_MAX_IN_FLIGHT, BatchingAdapter

logger = logging.getLogger("megatron_ipt.synthesis")

# A run of more than this many characters without a space is no ordinary word (a URL, a table rule, base64,
# text in a script written without spaces); words x 1.5 would count a 50 MB one as 1.5 tokens.
LONG_RUN = 32
_LONG_RUN = re.compile(f"[^ ]{{{LONG_RUN + 1},}}")


def words_x15(text: str) -> float:
    """The paper's cheap token estimate, whitespace words x 1.5, except that a run of more than LONG_RUN
    characters without a space counts as its UTF-8 bytes: a conservative bound, since byte-level BPE and
    SentencePiece with byte fallback never make more tokens than bytes. Ordinary text (no such run) is
    counted exactly as the paper does."""
    n = (text.count(" ") + 1) * 1.5
    for m in _LONG_RUN.finditer(text):
        n += len(m.group().encode("utf-8", "surrogatepass")) - 1.5
    return n


@dataclass
class Usage:
    prompts: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    cached_prompt_tokens: int = 0  # prompt tokens served from the engine's prefix cache
    cache_reports: int = 0  # generations whose engine said how many of their prompt tokens were cached

    def as_dict(self):
        return asdict(self)


@dataclass
class Generation:
    """What an engine's ``_generate`` returns per prompt; token counts None = not reported by the model."""

    text: Optional[str]
    prompt_tokens: Optional[int] = None
    generated_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None  # prompt tokens served from the prefix cache, None = not reported


def load_token_counter(spec: TokenizerSpec):
    """A token counter from the ``--tokenizer`` flags (``TokenizerSpec.from_args``).

    Prompts hold a literal ``<s>``, so no special tokens are added (the BOS convention of formats/wire.py), whatever the spec
    says."""
    tokenizer = replace(spec, include_special_tokens=False).build()
    return lambda text: len(tokenizer.encode(text))


class Engine:
    name = "base"
    Settings = None  # the engine's settings dataclass
    max_in_flight = DEFAULT_MAX_IN_FLIGHT
    empty_answer_fails = True  # an empty generation is a failure (None), not an answer without pairs
    _loop = _batcher = None

    def __init__(self, max_new_tokens=400, temperature=0.0, style: PromptStyle = None, token_counter=None):
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.style = style or PromptStyle("wire")
        self.exact_tokens = token_counter is not None
        self._count_text = token_counter or words_x15
        self.usage = Usage()
        self.on_progress = None

    def _init_from_model_tokenizer(self, max_new_tokens, temperature, prompt_style):
        """For engines that load a model with its tokenizer (``self.tokenizer``: hf, vllm): prompts are styled and
        measured with that tokenizer."""
        Engine.__init__(
            self,
            max_new_tokens,
            temperature,
            PromptStyle(prompt_style, self.tokenizer),
            token_counter=lambda text: len(self._ids(text)),
        )

    def describe(self) -> dict:
        """Settings that shape the output; a resumed run must use the same."""
        return {
            "engine": self.name,
            "model": getattr(self, "model", None),
            "prompt_style": self.style.name,
            "temperature": self.temperature,
            "length_guard": "tokenizer" if self.exact_tokens else "words x1.5",
        }

    def count_tokens(self, prompt: str) -> float:
        return self._count_text(self.style.render(prompt))

    def generate(self, prompts) -> List[Optional[str]]:
        start = time.perf_counter()
        rendered = [self.style.render(p) for p in prompts]
        results = self._generate(rendered)
        if len(results) != len(rendered):
            raise RuntimeError(f"{self.name} engine returned {len(results)} results for {len(rendered)} prompts")
        out = [self._account(text, gen) for text, gen in zip(rendered, results)]
        self.usage.seconds += time.perf_counter() - start
        return out

    def _account(self, text, gen: Generation) -> Optional[str]:
        """Count one finished generation of the rendered prompt ``text`` in ``usage``; its restored text, or None."""
        self.usage.prompts += 1
        # an engine's malformed answer fails its item only; an empty one too, where empty_answer_fails
        if not isinstance(gen.text, str) or (not gen.text and self.empty_answer_fails):
            self.usage.failures += 1
            return None
        self.usage.prompt_tokens += int(gen.prompt_tokens if gen.prompt_tokens is not None else self._count_text(text))
        self.usage.generated_tokens += int(
            gen.generated_tokens
            if gen.generated_tokens is not None
            else (self._count_text(gen.text) if gen.text else 0)
        )
        if gen.cached_tokens is not None:
            self.usage.cached_prompt_tokens += int(gen.cached_tokens)
            self.usage.cache_reports += 1
        return self.style.restore(gen.text)

    async def agenerate(self, prompt: str) -> Optional[str]:
        if self._batcher is None:
            self._batcher = BatchingAdapter(lambda prompts: self.generate(prompts), **self._batching())
        return await self._batcher.agenerate(prompt)

    def _batching(self) -> dict:
        """How the batching adapter cuts ``generate`` calls (``batching.BatchingAdapter``'s ``batch_size``/``size``):
        by default one call over every pending prompt."""
        return {}

    def run(self, coroutine):
        """Run ``coroutine`` to its end on the engine's event loop (one loop for the engine's life: an async
        client's connections belong to the loop that opened them)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coroutine)

    def _generate(self, texts: List[str]) -> List[Generation]:  # pragma: no cover - interface
        raise NotImplementedError

    def _ids(self, text):
        """The model tokenizer's ids of a prompt (engines with ``self.tokenizer``); no special tokens: the prompt's
        literal <s> is its only BOS (megatron_ipt/formats/wire.py)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _tokenize_fitting(self, texts, max_tokens):
        """Ids of every prompt, and the indices of those with at most ``max_tokens`` tokens; the others get no
        generation (a failure each), said once in a warning."""
        ids = [self._ids(t) for t in texts]
        fits = [i for i in range(len(texts)) if len(ids[i]) <= max_tokens]
        if len(fits) < len(texts):
            logger.warning(
                "%s: %d prompt(s) longer than %d tokens (--max-model-len): no generation",
                self.name,
                len(texts) - len(fits),
                max_tokens,
            )
        return ids, fits

    def progress(self, n: int):
        if self.on_progress is not None:
            self.on_progress(n)

    def close(self):
        if self._loop is not None:
            self._loop.close()
            self._loop = None
