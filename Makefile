# Two commands on a fresh clone: `make audit` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

# torch/torchvision pinned to the builds this project is tested with; the rest comes from pyproject.toml.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: audit test lint test-all test-fiftyone benchmark review-screenshot venv clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

audit: $(STAMP)
	$(BIN)/python -m pipeline $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pipeline

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "slow or not slow" $(ARGS)

# The fiftyone extra's tests (cam-audit export fiftyone): FiftyOne in a virtualenv layered on .venv and mongod's
# OpenSSL 1.1 libraries, both set up by scripts/setup_fiftyone.sh on first use (FIFTYONE_VENV=.venv: in .venv itself).
FIFTYONE_VENV ?= $(VENV)/fiftyone
test-fiftyone: $(STAMP)
	test -e $(FIFTYONE_VENV)/bin/fiftyone && test -e $(VENV)/fiftyone-libs/libssl.so.1.1 || FIFTYONE_VENV=$(FIFTYONE_VENV) bash scripts/setup_fiftyone.sh
	LD_LIBRARY_PATH=$(abspath $(VENV)/fiftyone-libs) FIFTYONE_DO_NOT_TRACK=true $(FIFTYONE_VENV)/bin/python -m pytest -m fiftyone tests/export $(ARGS)

benchmark: $(STAMP)
	$(BIN)/python scripts/benchmark.py $(ARGS)

# Screenshot of a run's review.html for the README (RUN=<run folder>; needs Debian's chromium + chromium-driver).
RUN ?=
review-screenshot: $(STAMP)
	$(BIN)/python scripts/review_screenshot.py $(RUN) $(ARGS)

clean:
	rm -rf $(VENV) outputs
