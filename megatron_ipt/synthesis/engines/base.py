"""The engine interface: a list of prompts in the wire format -> one generation per prompt.

A generation is the text produced after the prompt (pairs in the QA_TEMPLATE format, ending with </END>),
or None/"" when it failed; failures never raise for a single item (rounds.py counts them).
"""


class Engine:
    name = "base"

    def generate(self, prompts):  # pragma: no cover - interface
        raise NotImplementedError

    def close(self):
        pass
