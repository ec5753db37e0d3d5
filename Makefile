# Two commands for users: `make run` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Torch on 2 shared cores: passive OpenMP waiting keeps idle threads from spinning.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test venv browser clean bench model

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Headless Chromium for the browser tests comes from Debian's packages, never a downloaded build.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "install Debian's chromium (sudo apt-get install chromium chromium-driver) for the browser tests"; fi; }

run: venv
	$(VENV)/bin/vidclass up

test: venv browser
	$(VENV)/bin/python -m pytest

# Retrain the shipped model from scratch on a labelled corpus: features (resumable), the
# ensemble, and its evaluation on the source-disjoint test split.
CORPUS ?= ../shared/corpus
model: venv
	$(VENV)/bin/vidclass extract $(CORPUS) --out features_enhanced --index-dir data/processed/test
	$(VENV)/bin/vidclass train
	$(VENV)/bin/vidclass evaluate --out reports

bench: venv
	$(VENV)/bin/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache instance
