"""What one synthesis run of one shard is: ``SynthesisConfig``, a frozen dataclass whose fields declare the flags of
tools/synthesize.py (megatron_ipt/flags.py), grouped as its --help shows them: input and output, then synthesis.
The engine-specific flags are declared on each engine's settings (engines/: ``VLLMSettings``, ``OpenAISettings``,
``HFSettings``); the model settings below (model, lengths, sampling, prompt style) go to the engine as well."""

from dataclasses import dataclass
from typing import Optional, Tuple

from megatron_ipt.errors import ConfigError
from megatron_ipt.flags import flag

from .engines import ENGINES
from .engines.batching import DEFAULT_MAX_IN_FLIGHT
from .prompting import PROMPT_STYLES
from .rounds import SCHEDULES

# Why 5 %: a healthy run fails almost never (greedy decoding of prompts cut to fit; a server's transient errors
# are retried), so a rate this high means something systematic: a server down or overloaded past its retries,
# the wrong model, prompts the server refuses. Each failed text also loses its place as a demonstration in the
# next round. Below it the run finishes and --resume retries the recorded failures; above it the run stops
# after the part where the rate was passed, instead of spending hours writing parts without pairs.
DEFAULT_MAX_FAILURE_RATE = 0.05

IO, SYNTHESIS = "input and output", "synthesis"


def _comma_list(value: str) -> Tuple[str, ...]:
    return tuple(k for k in value.split(",") if k)


@dataclass(frozen=True)
class SynthesisConfig:
    input: str = flag(required=True, help="JSONL file (.gz/.zst too), glob or directory", group=IO)
    output_dir: str = flag(required=True, help=None, group=IO)
    text_key: str = flag("text", help=None, group=IO)
    carry_keys: Tuple[str, ...] = flag(
        ("id", "source"),
        type=_comma_list,
        help="comma-separated input keys copied into every entry when present (default: id,source)",
        group=IO,
    )
    skip_bad_lines: bool = flag(
        False, help="skip unusable input lines (counted and reported) instead of stopping", group=IO
    )
    num_shards: int = flag(1, help="record i goes to shard i %% num-shards", group=IO)
    shard_index: int = flag(0, help=None, group=IO)
    part_size: int = flag(1000, help="texts per output part (all rounds per part)", group=IO)
    resume: bool = flag(
        False,
        help="continue an earlier run: skip its finished parts, retry the texts whose generation failed",
        group=IO,
    )
    max_failure_rate: float = flag(
        DEFAULT_MAX_FAILURE_RATE,
        help="stop (exit status 3) after the part where more than this fraction of the run's generations failed "
        "(default: %(default)s); failed texts are recorded and --resume retries them",
        group=IO,
    )
    log_interval: int = flag(
        1000, help="texts between progress lines off a terminal (and a line at least every minute)", group=IO
    )
    summary_json: Optional[str] = flag(
        None,
        help="also write this run's summary (counts, tokens, engine seconds) as JSON here (written atomically)",
        group=IO,
    )

    engine: str = flag("rules", choices=ENGINES, help=None, group=SYNTHESIS)
    model: Optional[str] = flag(
        None,
        help="vllm: HF id or directory; hf: directory or .gguf "
        "(default SmolLM2-135M-Instruct); openai: served model name (default: the server's first)",
        group=SYNTHESIS,
    )
    rounds: int = flag(1, help="M: 2 for general corpora, 3 for domain corpora", group=SYNTHESIS)
    max_model_len: int = flag(4096, help=None, group=SYNTHESIS)
    max_new_tokens: int = flag(400, help=None, group=SYNTHESIS)
    temperature: float = flag(0.0, help="0 = greedy (the paper)", group=SYNTHESIS)
    seed: int = flag(0, help=None, group=SYNTHESIS)
    prompt_style: str = flag(
        "wire",
        choices=PROMPT_STYLES,
        help="wire: the synthesizer's format as is; oneshot/chat: with a demonstration, for "
        "general instruct models (see megatron_ipt/synthesis/prompting.py)",
        group=SYNTHESIS,
    )
    schedule: Optional[str] = flag(
        None,
        choices=SCHEDULES,
        help="pipelined: a chain's next round is asked for as soon as its last is parsed, while other chains are in "
        "flight; barrier: one generate call per round over all its texts (the reference procedure). Same "
        "collections either way. Default: pipelined, except barrier for --engine hf (its pipelined batches mix "
        "rounds, and left padding can change a greedy output in the last bits, so the files could differ)",
        group=SYNTHESIS,
    )
    max_in_flight: Optional[int] = flag(
        None,
        help="pipelined: chains in flight, each with at most one generation asked (default: --max-concurrency "
        f"for openai, the engine's --max-num-seqs for vllm, {DEFAULT_MAX_IN_FLIGHT} for the others)",
        group=SYNTHESIS,
    )

    def __post_init__(self):
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"--shard-index {self.shard_index} not in [0, {self.num_shards})")
        if self.rounds < 1 or self.part_size < 1:
            raise ConfigError("--rounds and --part-size must be at least 1")
        if not 0 <= self.max_failure_rate <= 1:
            raise ConfigError(f"--max-failure-rate {self.max_failure_rate}: expected a fraction in [0, 1]")

    @property
    def resolved_schedule(self) -> str:
        """--schedule, or its default for the engine (see its help)."""
        return self.schedule or ("barrier" if self.engine == "hf" else "pipelined")
