# The README's two set-up commands: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attnkit-installed
# Standard datasets: $ATTNKIT_DATA if set, else the shared folder beside the checkout when there is one.
ATTNKIT_DATA ?= $(if $(wildcard ../shared/data/reuters21578),$(abspath ../shared/data),$(HOME)/.cache/attnkit/data)
export ATTNKIT_DATA
DEMO_RUN ?= runs/demo-reuters-r8

.PHONY: install demo demo-core test test-slow lint bench-attention bench-classify bench-recommend bench-translate \
	bench-lm bench-vision bench-bf16 bench-cpu-train bench-explain

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,hf,serve,onnx]"
	touch $(STAMP)

# The main job: train and evaluate the news classifier on Reuters-21578 R8 (a fresh run each time).
demo: install
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/attnkit train classify --config configs/classify/reuters_r8.yaml --out $(DEMO_RUN) --threads 2

# The core at work without data: base model size, fused vs. reference attention.
demo-core: install
	$(VENV)/bin/attnkit demo

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check attnkit tests benchmarks docs
	$(VENV)/bin/ruff format --check attnkit tests benchmarks docs

bench-attention: install
	$(PY) benchmarks/attention.py

bench-classify: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/classify.py

bench-recommend: install
	$(PY) benchmarks/recommend.py

bench-translate: install
	$(PY) benchmarks/translate.py

bench-lm: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/lm.py

bench-vision: install
	$(PY) benchmarks/vision.py

bench-bf16: install
	$(PY) benchmarks/bf16.py

bench-cpu-train: install
	$(PY) benchmarks/cpu_train.py

bench-explain: install
	$(PY) benchmarks/explain.py
