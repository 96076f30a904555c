# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip

.PHONY: venv demo lint test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Three arms x two seeds at half the recipe's budget, two single-threaded runs at a time:
# under 10 minutes on a 2-core CPU.
demo: venv
	$(VENV)/bin/dysample-swap compare recipes/demo.yaml --arms original,dysample,dysample+ --seeds 2 \
		--jobs 2 --set train.max_steps=200 --set train.eval_every=50 --out runs/demo

# Static checks: the layer contracts (no import cycle), lint and format, types, the docs site.
lint: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check dysample_swap tests benchmarks examples
	$(VENV)/bin/ruff format --check dysample_swap tests benchmarks examples
	$(VENV)/bin/mypy
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test: venv lint
	$(PY) -m pytest -q

# Every figure of docs/benchmarks.md: the module, whole networks and threads, ONNX Runtime.
bench: venv
	$(PY) benchmarks/bench_upsamplers.py --threads 2 --rounds 20
	$(PY) benchmarks/bench_models.py --threads 2 --rounds 10
	$(PY) benchmarks/bench_onnx.py --threads 2 --rounds 8
	$(PY) benchmarks/bench_onnx.py --threads 2 --rounds 8 --dynamo

clean:
	rm -rf $(VENV) runs
