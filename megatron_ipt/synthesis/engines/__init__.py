"""Engines by name, each built from its own settings dataclass (``settings_class(name)``); an engine's module is
imported only when that engine is asked for (the heavy libraries, torch and vLLM, are imported only when a model
loads). ``tokenizer`` (a TokenizerSpec, or None) is the length guard of the engines without a model tokenizer
(rules, openai)."""

import dataclasses
import importlib

ENGINES = ("rules", "hf", "vllm", "openai")
_CLASSES = {
    "rules": "rules.RulesEngine",
    "hf": "hf.HFEngine",
    "vllm": "vllm.VLLMEngine",
    "openai": "openai.OpenAIEngine",
}


def engine_class(name):
    if name not in _CLASSES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module, cls = _CLASSES[name].split(".")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def settings_class(name):
    return engine_class(name).Settings


def engine_settings(name, values):
    """The settings of engine ``name`` found in ``values`` (e.g. every flag of a tool, by name): the ones that are
    fields of its settings class; a None value leaves the engine's default."""
    return {f.name: values[f.name] for f in dataclasses.fields(settings_class(name)) if values.get(f.name) is not None}


def settings_of(cls, engine: str, values: dict):
    """The settings dataclass ``cls`` of ``engine`` from ``values``: a key that is not one of its fields is an
    error naming it and the engine (a misspelt setting must not be silently ignored)."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise TypeError(
            f"the {engine} engine has no setting {', '.join(map(repr, unknown))}; its settings: {', '.join(known)}"
        )
    return cls(**values)


def build_engine(name, **settings):
    """Engine ``name`` built from ``settings`` (its settings dataclass's fields; any other key is a TypeError
    naming it and the engine)."""
    cls = engine_class(name)
    return cls(settings_of(cls.Settings, name, settings))
