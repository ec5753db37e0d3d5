# Two commands for users: `make run` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Torch on 2 shared cores: passive OpenMP waiting keeps idle threads from spinning.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test venv browser clean bench model

# nsfwjs's MobileNetV2 model files (vidclass/features/drawing_net.py) come from the npm registry at install
# time, pinned by version and tarball integrity (`npm view nsfwjs@4.3.0 dist.integrity`); they are
# never committed and never downloaded at run time. They land where drawing_net looks by default,
# $(VENV)/share/nsfwjs-$(NSFWJS_VERSION)/mobilenet_v2 (override with VIDCLASS_NSFWJS_DIR).
NSFWJS_VERSION := 4.3.0
NSFWJS_INTEGRITY := sha512-WTKDte0vp1X97N1h34P79G/hG+sVT3+TnDz9di1WseIJR93v11E4viNX7Vg9WsO6HYoR772Nzq2iM8jo3XBZ+g==
NSFWJS_DIR := $(VENV)/share/nsfwjs-$(NSFWJS_VERSION)
NSFWJS_STAMP := $(NSFWJS_DIR)/.installed

# The ONNX exports of the nets (VIDCLASS_CACHE_DIR, default ~/.cache/vidclass), made at install so
# the first classification does not import torch to make them; keyed by weights and module source.
ONNX_STAMP := $(VENV)/.onnx-prepared

venv: $(STAMP) $(NSFWJS_STAMP) $(ONNX_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(NSFWJS_STAMP): tools/fetch_nsfwjs.sh | $(STAMP)
	sh tools/fetch_nsfwjs.sh $(NSFWJS_DIR) $(NSFWJS_VERSION) $(NSFWJS_INTEGRITY)

$(ONNX_STAMP): $(STAMP) $(NSFWJS_STAMP) vidclass/features/backbone.py vidclass/features/drawing_net.py
	$(VENV)/bin/vidclass prepare
	touch $(ONNX_STAMP)

# Headless Chromium for the browser tests comes from Debian's packages, never a downloaded build.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "install Debian's chromium (sudo apt-get install chromium chromium-driver) for the browser tests"; fi; }

# `make run PORT=5001` when 5000 is taken (or set VIDCLASS_PORT); `vidclass up` checks it first.
PORT ?=
run: venv
	$(VENV)/bin/vidclass up $(if $(PORT),--port $(PORT))

test: venv browser
	$(VENV)/bin/python -m pytest

# Retrain the shipped model from scratch on a labelled corpus: features of every clip
# (resumable), family folds and locked families for the shipped recipe, the baseline and the
# previous recipe (the gate), calibration and the learning curve (reports/), then the ensemble
# fitted on every clip (models_enhanced/), and the corpus's clip vectors that retraining from
# users' corrections starts from (features_enhanced/corpus_pooled.npz).
CORPUS ?= ../shared/corpus
model: venv
	$(VENV)/bin/vidclass extract $(CORPUS) --out features_enhanced --index-dir data/processed/test --test-fraction 0.2
	$(VENV)/bin/vidclass train --reports reports
	$(VENV)/bin/vidclass pool-corpus

bench: venv
	$(VENV)/bin/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache instance
