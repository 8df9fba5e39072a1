"""Wire format of the released instruction synthesizer (model card instruction-pretrain/instruction-synthesizer;
Cheng et al. 2024, arXiv 2406.14491) and the parser of its output, as the released code parses it
(github.com/microsoft/LMOps instruction_pretrain/).

BOS convention (one rule, used by every engine): the literal strings ``<s>``/``</s>`` are part of the prompt
text, exactly as in tuning, and the model's tokenizer never adds special tokens of its own
(``add_special_tokens=False``). With the released synthesizer's tokenizer the literal ``<s>`` becomes BOS id 1,
so each prompt starts with exactly one BOS, as the tuning examples did. Concretely:
- ``hf``: prompts are tokenized with ``add_special_tokens=False``;
- ``vllm``: prompts are tokenized that way and passed to ``vllm.LLM.generate`` as token ids (``TokensPrompt``),
  so vLLM adds nothing (a plain string would get a second BOS);
- ``openai``: requests carry ``"add_special_tokens": false`` (vLLM's completions extension);
- token counts for the length guard (``--tokenizer``) are taken the same way.
"""

BOS = "<s>"
EOS = "</s>"
# The leading space before <CON> is part of the released format: do not strip it.
CONTEXT_TEMPLATE = " <CON> {context} </CON>"
QA_TEMPLATE = "<QUE> {question} <ANS> {answer} </END>"
DELIMITER = "\n\n"
END = "</END>"
ANS = "<ANS>"
QUE = "<QUE>"

OPTIONS_MARK = "\nOptions:\n- "
COT_QUESTION_MARK = "\nLet's think step by step."
COT_ANSWER_MARK = "\nTherefore, the answer is "


def cook_context(text: str) -> str:
    """``<s> <CON> {text} </CON>\\n\\n``; just ``<s>`` for an empty text (as the released code does)."""
    if not text:
        return BOS
    return BOS + CONTEXT_TEMPLATE.format(context=text) + DELIMITER


def cook_pairs(pairs) -> str:
    """Pairs ``[{"Q","A"}, ...]`` rendered with QA_TEMPLATE, joined by DELIMITER (no EOS)."""
    return DELIMITER.join(QA_TEMPLATE.format(question=p["Q"], answer=p["A"]) for p in pairs)


def cook_example(text: str, pairs) -> str:
    """One demonstration / tuning example: context, pairs, then a literal EOS right after the last </END>."""
    return cook_context(text) + cook_pairs(pairs) + EOS


def parse_pred(pred: str, dedup: bool = True) -> list:
    """Raw generation -> ``[{"Q": q, "A": a}, ...]`` exactly as the released code parses it.

    Split on </END>; the tail after the last </END> is dropped (truncated by max_tokens or junk); a part
    needs exactly one <ANS>, a question starting with <QUE> and a non-empty answer. With ``dedup`` the first
    occurrence of each case-insensitive question is kept.
    """
    if not pred:
        return []
    parts = pred.split(END)
    if not pred.endswith(END):
        parts = parts[:-1]
    pairs, seen = [], set()
    for part in parts:
        if part.count(ANS) != 1:
            continue
        q, a = part.split(ANS)
        q, a = q.strip(), a.strip()
        if not q.startswith(QUE) or a == "":
            continue
        q = q[len(QUE) :].strip()
        if dedup:
            key = q.lower()
            if key in seen:
                continue
            seen.add(key)
        pairs.append({"Q": q, "A": a})
    return pairs


def pair_type(pair) -> str:
    """Coarse kind for statistics: 'cot' (with or without options), 'options' or 'free-form' (the kinds of pairs
    in the synthesizer's tuning data)."""
    if COT_QUESTION_MARK in pair["Q"] or COT_ANSWER_MARK in pair["A"]:
        return "cot"
    if OPTIONS_MARK in pair["Q"]:
        return "options"
    return "free-form"
