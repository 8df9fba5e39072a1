"""Corpus building: render synthesized collections with the template library, mix them by recipe,
decontaminate against evaluation sets (Cheng et al. 2024, arXiv 2406.14491; details in each module).
Entry point: tools/build_corpus.py."""

import os as _os

# 40 instruction-response pairs written for this project (see data/README.md): an offline stand-in for OpenOrca.
SAMPLE_GENERAL_INSTRUCTIONS = _os.path.join(
    _os.path.dirname(_os.path.abspath(__file__)), "data", "general_instructions_sample.jsonl"
)
