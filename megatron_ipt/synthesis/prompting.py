"""How a wire-format prompt is shown to a model (``--prompt-style``).

- ``wire`` (default): the prompt exactly as the released ``instruction-pretrain/instruction-synthesizer`` was
  tuned on (megatron_ipt/formats/wire.py). Use it with that model or any model tuned on the format.
- ``oneshot``: a general model does not know the format, so a fixed demonstration in the wire format (a short
  text and three pairs: free-form, options, chain-of-thought) is put in front of the prompt, and the answer
  is started with ``<QUE>``. A raw continuation prompt: no chat template.
- ``chat``: the same demonstration and the prompt inside the model's chat template (a user turn with a one-line
  instruction), with the assistant turn started with ``<QUE>``. Needs a tokenizer that has a chat template.

The started ``<QUE>`` is put back in front of the generation before parsing, so the parser (``parse_pred``)
sees the wire format in every style. What these styles yield with a small general model is measured in docs/synthesis.md.
"""

from megatron_ipt.errors import ConfigError
from megatron_ipt.formats.wire import COT_ANSWER_MARK, COT_QUESTION_MARK, OPTIONS_MARK, QUE, cook_example

PROMPT_STYLES = ("wire", "oneshot", "chat")

# Our own demonstration (written for this project), one pair of each kind the parser knows.
DEMO_TEXT = (
    "Tidal power stations turn the rise and fall of the sea into electricity. Water flows through turbines in "
    "a barrage as the tide comes in and again as it goes out, so a station produces power about four times a "
    "day. Because tides follow the moon, the output can be predicted years ahead, which is rare for a "
    "renewable source."
)
DEMO_PAIRS = [
    {"Q": "How many times a day does a tidal power station produce power?", "A": "About four times a day."},
    {
        "Q": "Why can the output of a tidal power station be predicted years ahead?"
        + OPTIONS_MARK
        + "\n- ".join(
            ["Because tides follow the moon.", "Because the turbines are large.", "Because the sea is always calm."]
        ),
        "A": "Because tides follow the moon.",
    },
    {
        "Q": "Is tidal power more predictable than most renewable sources?" + COT_QUESTION_MARK,
        "A": "The text says the output can be predicted years ahead because tides follow the moon, and that this "
        "is rare for a renewable source." + COT_ANSWER_MARK + "yes",
    },
]
CHAT_INSTRUCTION = (
    "Write question-answer pairs about the last text, in exactly the format of the example: "
    "<QUE> question <ANS> answer </END>, pairs separated by a blank line."
)


class PromptStyle:
    def __init__(self, name="wire", tokenizer=None):
        if name not in PROMPT_STYLES:
            raise ConfigError(f"unknown --prompt-style {name!r}; choose one of {', '.join(PROMPT_STYLES)}")
        if name == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "--prompt-style chat needs a tokenizer with a chat template (engines hf and vllm "
                "have one when the model does); use --prompt-style oneshot otherwise"
            )
        self.name, self.tokenizer = name, tokenizer
        self.prefix = "" if name == "wire" else QUE

    def render(self, prompt: str) -> str:
        """The text the model continues."""
        if self.name == "wire":
            return prompt
        demo = cook_example(DEMO_TEXT, DEMO_PAIRS)
        if self.name == "oneshot":
            return demo + prompt + self.prefix
        message = f"{CHAT_INSTRUCTION}\n\n{demo}{prompt}"
        chat = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        return chat + self.prefix

    def restore(self, generation):
        """The generation as the parser expects it; an empty one stays empty (a failure)."""
        return self.prefix + generation if generation else generation
