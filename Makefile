VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,tiny,nlp,eval,export,serve

.PHONY: demo test install lint format clean demo-model demo-model-v2

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/glip demo

test: install
	$(VENV)/bin/ruff check glip tests benchmarks
	$(VENV)/bin/ruff format --check glip tests benchmarks
	$(PY) -m pytest -q --durations=20; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

# Retrain the bundled demo model (glip/assets/demo_model) from scratch: ~30 min on 2 CPU cores.
demo-model: install
	$(PY) experiments/demo_model.py

# Retrain the bundled GLIPv2 demo model (glip/assets/demo_model_v2) on top of the GLIP demo model: <= 60 min on 2 CPU cores
# (docs/reproduction.md section 4.1 has the measured time).
demo-model-v2: install
	$(PY) experiments/demo_model_v2.py

format: install
	$(VENV)/bin/ruff format glip tests benchmarks
	$(VENV)/bin/ruff check --fix glip tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
