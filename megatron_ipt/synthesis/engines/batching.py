"""``agenerate(prompt)`` for engines whose model takes batches (rules, hf, vllm offline): the prompts the pipelined
schedule (rounds.synthesize_part) asks for one at a time are pooled into ``generate(prompts)`` calls."""

import asyncio
import heapq

from megatron_ipt.errors import ConfigError

DEFAULT_MAX_IN_FLIGHT = 256  # generations asked and not yet answered, for engines that do not set their own


class BatchingAdapter:
    """``agenerate(prompt)`` over a batch ``generate(prompts)`` (engines without their own async path: rules,
    hf, vllm offline). The prompts asked wait in a pool; each step first lets every chain that is ready (just
    answered, or just let through the gate) ask, then takes one batch from the pool, runs it and answers its
    prompts, so a chain's next round joins the pool as soon as its last generation is back.

    Without ``batch_size`` a batch is the whole pool, in arrival order. With it (hf: static batches), a batch is
    the ``batch_size`` pooled prompts with the largest ``size`` (token length: less padding), ties by arrival;
    the batches stay full while the pool holds enough prompts. The batch call runs on the event loop's thread
    (blocking it), as the engine's own code expects; nothing depends on timing, so the batches a run makes are
    a function of its inputs."""

    def __init__(self, generate, batch_size=None, size=None):
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"--batch-size {batch_size}: expected at least 1")
        self.generate, self.batch_size, self.size = generate, batch_size, size
        self.pool, self.arrivals, self.draining = [], 0, False  # pool: heap of (-size, arrival, prompt, answer)

    async def agenerate(self, prompt):
        answer = asyncio.get_running_loop().create_future()
        heapq.heappush(self.pool, (-self.size(prompt) if self.size else 0, self.arrivals, prompt, answer))
        self.arrivals += 1
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await answer

    async def _drain(self):
        try:
            while self.pool:
                # Let every chain that is ready ask first, so the batch is as full as the in-flight bound allows.
                seen = -1
                while seen != self.arrivals:
                    seen = self.arrivals
                    for _ in range(3):
                        await asyncio.sleep(0)
                batch = []
                while self.pool and (self.batch_size is None or len(batch) < self.batch_size):
                    entry = heapq.heappop(self.pool)
                    if not entry[3].done():  # a cancelled chain's prompt is dropped
                        batch.append(entry)
                if not batch:
                    break
                try:
                    outs = list(self.generate([p for _, _, p, _ in batch]))
                    if len(outs) != len(batch):
                        raise RuntimeError(f"engine returned {len(outs)} generations for {len(batch)} prompts")
                except BaseException as e:
                    for *_, answer in batch:
                        if not answer.done():  # a cancelled chain's answer is done already
                            answer.set_exception(e)
                    raise
                for (*_, answer), out in zip(batch, outs):
                    if not answer.done():
                        answer.set_result(out)
        finally:
            self.draining = False
