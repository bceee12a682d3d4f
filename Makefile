PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements/lock.txt

.PHONY: demo test bench reproduce clean lock

# Every package at the exact version in the lock, then the project itself. pip installs (not uv) because pip
# is what finds the torch/torchvision wheels a machine keeps on its own disk. --no-deps: the lock already holds
# every package, and pip's resolver would refuse the metadata fixes in requirements/overrides.txt; `pip check`
# then proves nothing else is missing or mismatched.
$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "$(LOCK) is resolved for Python 3.11, $(VENV) has " + sys.version.split()[0] + ": rm -r $(VENV) and run make PYTHON=python3.11")'
	$(PY) -m pip install --quiet "$$(grep '^pip==' $(LOCK))"
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	! $(PY) -m pip check | grep -v -e '^No broken requirements' -e '^torchattacks [^ ]* has requirement requests' \
	    || { echo "$(LOCK) does not satisfy pyproject.toml and its packages: run make lock"; exit 1; }
	touch $(STAMP)

# The one command that regenerates $(LOCK): pyproject's `cpu`, `dev` and `sign` extras and its `tools` group,
# torch held at constraints.txt, requirements/overrides.txt mending wrong metadata, resolved for CPython 3.11
# on x86-64 Linux. Versions already in the lock are kept while they still fit. Serving through PyTriton
# (nvidia-pytriton pins numpy<2) is not in this lock: it gets its own extra and lock.
# Needs only the locked uv, so it also works while the lock lags behind pyproject.toml.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep '^uv==' $(LOCK))"
	$(VENV)/bin/uv pip compile pyproject.toml --extra cpu --extra dev --extra sign --group tools \
	    -c constraints.txt --overrides requirements/overrides.txt \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --custom-compile-command 'make lock' --quiet -o $(LOCK)

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
