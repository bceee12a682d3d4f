PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench reproduce clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[cpu,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m atld_deploy demo --workdir demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py --iters 3
	$(PY) benchmarks/bench_export.py
	test -f demo/artifacts/manifest.json || $(MAKE) demo
	$(PY) benchmarks/bench_infer.py --artifacts demo/artifacts

clean:
	rm -rf $(VENV) demo
