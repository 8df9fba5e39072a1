"""Synthesizer fine-tuning: the tuning data (sequences.py: read the collection, sample, render in the wire format,
pack same-dataset examples with a loss mask into .bin/.idx) and a stand-in collection for CPU (standin.py)."""
