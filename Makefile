# Two entry points, both idempotent: `make testnet` and `make test`.
# The venv is rebuilt only when pyproject.toml changes (stamp file).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-fast testnet lint typecheck install clean browser docker-test

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,plot]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The explorer's browser test drives Debian's chromium (installed here when missing and
# this is a root shell with apt, as on CI; elsewhere that test says what is missing).
browser:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null; } || echo "note: no chromium; the explorer's browser test will be skipped"

# Everything, as CI runs it (the slowest 40 tests are listed at the end).
test: lint typecheck browser
	$(BIN)/pytest -q --durations=40

# The fast tier, for every edit: unit, property and virtual-time tests and in-process
# libp2p hosts; no ezkl circuit, no process, no namespace, no Docker (those are marked
# `slow`). The slowest 15 are listed, so a test that creeps up is seen.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow" --durations=15

# A fresh 4-node network (a publisher that also observes, 3 participants) on a non-IID
# (Dirichlet 0.5 label skew) split of digits, under the best-share rule (each round's
# aggregate is the private, exact mean of the best proven models; protocol v6's server
# momentum steps the global model from it),
# run until 5 blocks are final on every node.
TESTNET_DIR ?= .testnet
# Seconds from init to round 0: init's own remaining work and the nodes' start (torch,
# ezkl and the prover workers load: about 25 s on 2 busy cores) must fit, or round 0 is
# lost (15 s lost it: the nodes were ready 12 s into it). Participants get the proving key
# init made, so no node rebuilds one. The round length is measured by init (auto).
START_DELAY ?= 40
testnet: $(STAMP)
	rm -rf $(TESTNET_DIR)
	$(BIN)/zkpot testnet init --out $(TESTNET_DIR) --nodes 4 --participants 3 \
		--task digits-mlp --eval-batch 16 --partition dirichlet --alpha 0.5 --rule best-share \
		--start-delay $(START_DELAY)
	$(BIN)/zkpot testnet up $(TESTNET_DIR) --blocks 5

# The compose testnet under a real Docker engine: build, 4 nodes up, an agreed final
# block, the CLI inside and outside, teardown (docker/test-compose.sh says each step).
docker-test: $(STAMP)
	bash docker/test-compose.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
