"""megatron-ipt: Instruction Pre-Training (Cheng et al., 2024) on megatron-core."""

__version__ = "0.1.0"
