# The README's commands. `make demo` and `make test` create .venv when absent and install the package.
PYTHON ?= python3
VENV   ?= .venv
TORCH  := torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
STAMP  := $(VENV)/.sslab-installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install $(TORCH) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sslab demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=20

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/python benchmarks/trainer_overhead.py
	OMP_NUM_THREADS=1 $(VENV)/bin/python benchmarks/vision_throughput.py

clean:
	rm -rf runs .pytest_cache
