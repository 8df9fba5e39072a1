"""Checkpoint conversion between Hugging Face Llama/Mistral directories and our megatron-core checkpoints
(tools/convert_checkpoint.py). llama.py: the tensor layouts; hf_io.py: HF files; hf_checkpoint.py: the two
directions."""
