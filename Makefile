PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements/lock.txt
# `serve` runs on PyTriton, which pins numpy<2: its own lock and venv (pyproject's `serve` extra says why)
SERVE_VENV  ?= .venv-serve
SERVE_PY    := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed
SERVE_LOCK  := requirements/serve.txt
# `infer --executor ray`: the default venv plus the `ray` extra, pinned in its own lock (lock.txt's pins + Ray Data)
RAY_LOCK  := requirements/lock-ray.txt
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: demo test test-serve test-ray test-all serve-venv bench bench-serve reproduce clean lock

# Every package at the exact version in the lock, then the project itself. pip installs (not uv) because pip
# is what finds the torch/torchvision wheels a machine keeps on its own disk. --no-deps: the lock already holds
# every package, and pip's resolver would refuse the metadata fixes in requirements/overrides.txt; `pip check`
# then proves nothing else is missing or mismatched.
# $(1) venv, $(2) its lock.
define install_locked
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "$(2) is resolved for Python 3.11, $(1) has " + sys.version.split()[0] + ": rm -r $(1) and run make PYTHON=python3.11")'
	$(1)/bin/python -m pip install --quiet "$$(grep '^pip==' $(2))"
	$(1)/bin/python -m pip install --quiet --no-deps -r $(2)
	$(1)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	! $(1)/bin/python -m pip check | grep -v -e '^No broken requirements' -e '^torchattacks [^ ]* has requirement requests' \
	    || { echo "$(2) does not satisfy pyproject.toml and its packages: run make lock"; exit 1; }
	touch $(1)/.installed
endef

$(STAMP): $(LOCK) pyproject.toml
	$(call install_locked,$(VENV),$(LOCK))

serve-venv: $(SERVE_STAMP)
$(SERVE_STAMP): $(SERVE_LOCK) pyproject.toml
	$(call install_locked,$(SERVE_VENV),$(SERVE_LOCK))

# The one command that regenerates $(LOCK): pyproject's `cpu`, `dev`, `sign` and `cpp` extras and its `tools`
# group, torch held at constraints.txt, requirements/overrides.txt mending wrong metadata, resolved for CPython
# 3.11 on x86-64 Linux. Versions already in a lock are kept while they still fit. $(SERVE_LOCK): the same plus
# `serve` (so numpy 1.26) without `cpp`, for glibc 2.35+ (the PyTriton wheel's Triton server needs it).
# $(RAY_LOCK): every pin of $(LOCK) as a requirement plus the `ray` extra, so it adds Ray and changes nothing.
# Needs only the locked uv, so it also works while the lock lags behind pyproject.toml.
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --group tools -c constraints.txt \
    --overrides requirements/overrides.txt --python-version 3.11 --custom-compile-command 'make lock' --quiet
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$$(grep '^uv==' $(LOCK))"
	$(UV_COMPILE) --extra cpu --extra dev --extra sign --extra cpp --python-platform x86_64-manylinux_2_28 -o $(LOCK)
	$(UV_COMPILE) --extra cpu --extra dev --extra sign --extra serve --python-platform x86_64-manylinux_2_35 -o $(SERVE_LOCK)
	$(VENV)/bin/uv pip compile $(LOCK) pyproject.toml --extra ray -c constraints.txt --overrides requirements/overrides.txt \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' --quiet -o $(RAY_LOCK)

demo: $(STAMP)
	$(PY) -m atld_deploy demo --workdir demo

test: $(STAMP)
	$(PY) -m pytest -q

# tests/serve against a real Triton server, in the serve venv (the default venv has no PyTriton: they skip there)
test-serve: $(SERVE_STAMP)
	$(SERVE_PY) -m pytest -q tests/serve

# tests/ray on a real local Ray cluster; $(RAY_LOCK) holds every pin of $(LOCK) unchanged, so this only adds Ray
$(RAY_STAMP): $(STAMP) $(RAY_LOCK)
	$(PY) -m pip install --quiet --no-deps -r $(RAY_LOCK)
	touch $@
test-ray: $(RAY_STAMP)
	$(PY) -m pytest -q -m 'not bench' tests/ray

# everything but the benchmarks: the default suite and the slow tests (Ray's on a real local cluster), then the
# serve tests in their own venv
test-all: $(RAY_STAMP) $(SERVE_STAMP)
	$(PY) -m pytest -q -m 'not bench'
	$(SERVE_PY) -m pytest -q tests/serve

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py --iters 3
	$(PY) benchmarks/bench_export.py
	test -f demo/artifacts/manifest.json || $(MAKE) demo
	$(PY) benchmarks/bench_infer.py --artifacts demo/artifacts

bench-serve: $(SERVE_STAMP)
	test -f demo/artifacts/manifest.json || $(MAKE) demo
	$(SERVE_PY) benchmarks/bench_serve.py demo/artifacts

clean:
	rm -rf $(VENV) $(SERVE_VENV) demo

# On a CUDA machine: TensorRT engines, parity through the serving runners, throughput/latency at batch 1/8/64/256
# and the GPU training ratio into docs/measurements/bench_gpu.json. Without CUDA, or with DRY=1, a dry run that
# says so on its first line and names each item it skipped. RUN=PATH: the run to export (default demo/run).
.PHONY: bench-gpu
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_gpu.py --run $(or $(RUN),demo/run) $(if $(filter-out 0,$(DRY)),--dry)
