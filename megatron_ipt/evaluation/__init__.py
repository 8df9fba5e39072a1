"""Evaluation: task files (ours and AdaptLLM's), metrics, HF and megatron backends, task building. See scoring.py."""
