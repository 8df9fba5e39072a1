"""Client for any OpenAI-compatible ``/v1/completions`` server, e.g. ``vllm serve`` replicas, so many GPUs
or nodes serve one run (examples/synthesize_vllm_serve.sh).

One prompt per request (``agenerate``: an async request on httpx's AsyncClient, so the pipelined schedule keeps
the server's batch full), at most ``max_concurrency`` requests in flight, spread round-robin over
the ``base_urls`` (replicas). Each request walks the replicas from its own starting one, so its retry goes to
the next replica whatever other requests did meanwhile (a shared cursor let a request draw the same dead replica
on every attempt while its neighbours drew the live ones); a replica that could not be reached (refused, reset,
timed out) is passed over for ``REPLICA_COOLDOWN`` seconds, unless every replica is down, so one dead replica
costs one failed attempt per cool-down instead of every other request's first attempt. A request that times out (no complete answer
within ``request_timeout`` seconds: an overall deadline for the whole request, from connecting to the last byte of
the body, so a server that answers a byte at a time cannot hold it forever), loses its connection, or gets HTTP 408/429/5xx or a malformed answer (not JSON, no
``choices``, a ``text`` that is not a string, a ``usage`` that is not an object of counts) is retried up to
``max_retries`` times with exponential backoff (``backoff`` x 2^attempt seconds, capped at 60 s, +0-25%
jitter); other HTTP errors (e.g. 400 prompt too long) are not retried. An item that still fails returns None,
is logged, and the run goes on (runner.py records it for ``--resume`` and watches the failure rate).

At start the engine asks ``/models`` (with the same retries): no server answering is an error, and so is a
``--model`` that the answering server does not list. The API key (``api_key``, else ``$OPENAI_API_KEY``) is
sent as ``Authorization: Bearer``.

Prefix caching: a chain's next prompt starts with its last prompt and generation, so with ``vllm serve``
(prefix caching is on by default in vLLM's V1 engine) most of it is served from the cache; the server reports
the cached count with ``--enable-prompt-tokens-details`` (examples/synthesize_vllm_serve.sh sets it) and the
summary shows it.

BOS: the request carries ``"add_special_tokens": false`` (a vLLM extension; servers that do not know it ignore
it), so the literal ``<s>`` of the prompt is the only BOS (the convention of formats/wire.py). Token counts come
from the server's ``usage``.
"""

import asyncio
import itertools
import os
import random
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import httpx

from megatron_ipt.errors import ConfigError, UnavailableError
from megatron_ipt.flags import flag
from megatron_ipt.formats.wire import EOS
from megatron_ipt.tokenizers import TokenizerSpec

from ..prompting import PromptStyle
from .base import Engine, Generation, load_token_counter, logger

DEFAULT_BASE_URL = ("http://127.0.0.1:8000/v1",)
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_BACKOFF = 60.0
REPLICA_COOLDOWN = 30.0  # seconds an unreachable replica is passed over (a restarting vllm serve comes back)


class RequestFailed(Exception):
    def __init__(self, message, retry, answered=True):
        super().__init__(message)
        self.retry = retry
        self.answered = answered  # False: no server answered (refused, reset, timed out)


def _completion(answer):
    """The Generation of a ``/completions`` answer; RequestFailed (retried) when the answer is not shaped as
    the protocol says: a server that answers garbage fails that item, never the run."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RequestFailed(f"malformed answer, no choices: {str(answer)[:200]}", retry=True)
    text = choices[0].get("text")
    if not isinstance(text, str):
        raise RequestFailed(f"malformed answer, choices[0].text is {type(text).__name__}, not a string", retry=True)
    usage = answer.get("usage")
    usage = {} if usage is None else usage
    counts = [usage.get("prompt_tokens"), usage.get("completion_tokens")] if isinstance(usage, dict) else None
    if counts is None or any(c is not None and (type(c) is not int or c < 0) for c in counts):
        raise RequestFailed(f"malformed answer, usage is not an object of token counts: {str(usage)[:200]}", True)
    return Generation(text, *counts, cached_tokens=_cached_tokens(usage))


def _cached_tokens(usage):
    """``usage.prompt_tokens_details.cached_tokens``: prompt tokens served from the server's prefix cache (sent by
    ``vllm serve --enable-prompt-tokens-details`` and by OpenAI); None when absent or not a count."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if type(cached) is int and cached >= 0 else None


@dataclass(frozen=True)
class OpenAISettings:
    model: Optional[str] = None  # the served model's name; None: the server's first
    base_url: Union[str, Sequence[str], None] = flag(
        None,
        flags=("--openai-base-url",),
        action="append",
        help="server URL(s), e.g. http://node1:8000/v1; repeat or comma-separate for replicas",
        group="openai engine",
    )  # None: DEFAULT_BASE_URL
    max_new_tokens: int = 400
    temperature: float = 0.0
    api_key: Optional[str] = flag(
        None,
        help="sent as 'Authorization: Bearer KEY' (vllm serve --api-key); default: $OPENAI_API_KEY, which keeps the "
        "key out of the process list",
        group="openai engine",
    )
    max_concurrency: int = flag(16, help="requests in flight", group="openai engine")
    max_retries: int = flag(4, help=None, group="openai engine")
    request_timeout: float = flag(
        600.0,
        help="seconds one request may take in all, from connecting to the answer's last byte (an overall deadline, "
        "not per read); a request past it is cancelled and retried (--max-retries), then its text is a failed "
        "generation (default: %(default)s)",
        group="openai engine",
    )
    backoff: float = 1.0
    tokenizer: Optional[TokenizerSpec] = None  # counts prompt tokens for the length guard; None: words x1.5
    prompt_style: str = "wire"
    seed: Optional[int] = None


class OpenAIEngine(Engine):
    name = "openai"
    Settings = OpenAISettings

    def __init__(self, settings: Optional[OpenAISettings] = None):
        s = settings or OpenAISettings()
        model, max_concurrency = s.model, s.max_concurrency
        base_url = DEFAULT_BASE_URL if s.base_url is None else s.base_url
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        urls = [u.strip().rstrip("/") for part in urls for u in part.split(",") if u.strip()]
        if not urls:
            raise ConfigError("--openai-base-url: give at least one server URL, e.g. http://host:8000/v1")
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ConfigError(f"--openai-base-url {u!r}: expected http://HOST:PORT/v1")
        if s.prompt_style == "chat":
            raise ConfigError(
                "--prompt-style chat is not available with --engine openai (the chat template is "
                "the server's); use --prompt-style oneshot"
            )
        self.base_urls, self.max_retries, self.timeout, self.backoff = urls, s.max_retries, s.request_timeout, s.backoff
        self.api_key = s.api_key or os.environ.get("OPENAI_API_KEY")
        self._next_url = itertools.cycle(range(len(urls)))
        self._down_until = [0.0] * len(urls)  # time.monotonic() until which replica i is passed over
        if max_concurrency < 1:
            raise ConfigError(f"--max-concurrency {max_concurrency}: expected at least 1")
        self.max_concurrency = self.max_in_flight = max_concurrency
        self._client = self._slots = None  # made on the engine's event loop, at the first request
        super().__init__(
            s.max_new_tokens,
            s.temperature,
            PromptStyle(s.prompt_style),
            token_counter=load_token_counter(s.tokenizer) if s.tokenizer else None,
        )
        served = self._served_models()
        if model is None and not served:
            raise UnavailableError(
                f"--engine openai: could not list the served models at {self.base_urls[0]}; pass --model to name "
                "the model"
            )
        if model is not None and served and model not in served:
            raise UnavailableError(
                f"--model {model!r} is not served at {', '.join(urls)} (it serves: {', '.join(served)})"
            )
        self.model = model or served[0]
        self.body = {
            "model": self.model,
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "stop": [EOS],
            "add_special_tokens": False,
        }
        if s.seed is not None and s.temperature > 0:
            self.body["seed"] = s.seed

    def _replica(self, after=None):
        """The index of the replica for an attempt: the shared round-robin's next for a request's first attempt
        (``after`` None), else the one after ``after``; replicas in their cool-down are passed over unless all are."""
        n = len(self.base_urls)
        start = next(self._next_url) if after is None else (after + 1) % n
        now = time.monotonic()
        for k in range(n):
            if self._down_until[(start + k) % n] <= now:
                return (start + k) % n
        return start

    async def _request(self, url, body=None):
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            # httpx's timeout bounds connect and each read/write; the request as a whole is bounded below
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.max_concurrency)
            self._client = httpx.AsyncClient(headers=headers, timeout=self.timeout, limits=limits)
        request = self._client.get(url) if body is None else self._client.post(url, json=body)
        try:
            # the overall deadline: httpx's own timeout is per read, which a server sending a byte at a time never
            # trips; the response body is read inside this (no streaming), so the whole answer is bounded
            resp = await asyncio.wait_for(request, self.timeout)
        except asyncio.TimeoutError:
            raise RequestFailed(
                f"{url}: no complete answer within {self.timeout:g} s (--request-timeout)", retry=True, answered=False
            ) from None
        except httpx.HTTPError as e:  # refused, reset, dropped, timed out
            raise RequestFailed(f"{url}: {e!r}", retry=True, answered=False) from None
        if resp.status_code >= 400:
            detail = resp.content[:300].decode("utf-8", "replace")
            raise RequestFailed(
                f"HTTP {resp.status_code} from {url}: {detail}", retry=resp.status_code in RETRY_STATUS
            ) from None
        try:
            return resp.json()
        except ValueError:
            raise RequestFailed(f"{url}: answer is not JSON: {resp.content[:200]!r}", retry=True) from None

    async def _with_retries(self, path, body=None, parse=lambda answer: answer):
        replica = None
        for attempt in range(self.max_retries + 1):
            replica = self._replica(after=replica)
            try:
                return parse(await self._request(self.base_urls[replica] + path, body))
            except RequestFailed as e:
                if not e.answered and len(self.base_urls) > 1:
                    if self._down_until[replica] <= time.monotonic():
                        logger.warning(
                            "openai: %s unreachable; passed over for %g s", self.base_urls[replica], REPLICA_COOLDOWN
                        )
                    self._down_until[replica] = time.monotonic() + REPLICA_COOLDOWN
                if not e.retry or attempt == self.max_retries:
                    raise
                delay = min(MAX_BACKOFF, self.backoff * 2**attempt) * (1 + 0.25 * random.random())
                logger.info("openai: %s; retry %d/%d in %.1f s", e, attempt + 1, self.max_retries, delay)
                await asyncio.sleep(delay)

    def _served_models(self):
        """The model names a server lists at ``/models`` (None: it answers, but with no list we can read), asked
        at start with the usual retries, so that a run whose servers cannot be reached stops before it begins
        instead of failing every generation."""
        try:
            answer = self.run(self._with_retries("/models"))
        except RequestFailed as e:
            if not e.answered:
                raise UnavailableError(
                    f"--engine openai: cannot reach a server at {', '.join(self.base_urls)} ({e}); is it up? "
                    "(--openai-base-url)"
                ) from None
            return None  # e.g. HTTP 404: a server without /models; --model names the model
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            return None
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] or None

    async def agenerate(self, prompt):
        """One generation (None: failed after the retries), counted in ``usage``; at most ``max_concurrency``
        in flight. ``usage.seconds`` counts the time at least one request was in flight."""
        rendered = self.style.render(prompt)
        if self._slots is None:
            self._slots, self._busy, self._busy_since = asyncio.Semaphore(self.max_concurrency), 0, 0.0
        async with self._slots:
            if self._busy == 0:
                self._busy_since = time.perf_counter()
            self._busy += 1
            try:
                gen = await self._with_retries("/completions", dict(self.body, prompt=rendered), parse=_completion)
            except RequestFailed as e:
                logger.warning("openai: no generation for one prompt: %s", e)
                gen = Generation(None)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self.usage.seconds += time.perf_counter() - self._busy_since
                self.progress(1)
        return self._account(rendered, gen)

    def generate(self, prompts):
        async def all_of():
            return await asyncio.gather(*(self.agenerate(p) for p in prompts))

        return list(self.run(all_of()))

    def close(self):
        if self._client is not None:
            self.run(self._client.aclose())
            self._client = None
        super().close()
