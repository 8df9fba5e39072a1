"""Engines by name. Each takes the settings it uses as keyword arguments and ignores the rest, so one
settings dict (the CLI's flags) builds any of them; heavy engines are imported only when selected. ``tokenizer``
is a TokenizerSpec (or None) for the length guard of the engines without a model tokenizer (rules, openai)."""

ENGINES = ("rules", "hf", "vllm", "openai")


def build_engine(name, **settings):
    if name == "rules":
        from ..rules import RulesEngine
        from .base import load_token_counter

        tokenizer = settings.pop("tokenizer", None)
        return RulesEngine(token_counter=load_token_counter(tokenizer) if tokenizer else None, **settings)
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(**settings)
    if name == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(**settings)
    if name == "openai":
        from .openai import OpenAIEngine

        return OpenAIEngine(**settings)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
