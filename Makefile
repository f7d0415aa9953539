# Two entry points, both idempotent: `make testnet` and `make test`.
# The venv is rebuilt only when pyproject.toml changes (stamp file).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test testnet lint typecheck install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q

# A fresh 4-node network (a publisher that also observes, 3 participants) on a non-IID
# (Dirichlet 0.5 label skew) split of digits, under protocol v2's best-share rule (each
# round's global model is the private, exact mean of the best proven models),
# run until 5 blocks are final on every node.
TESTNET_DIR ?= .testnet
# Seconds from init to round 0: the nodes start in them (participants get the proving key
# init made, so no node rebuilds one). The round length is measured by init (auto).
START_DELAY ?= 15
testnet: $(STAMP)
	rm -rf $(TESTNET_DIR)
	$(BIN)/zkpot testnet init --out $(TESTNET_DIR) --nodes 4 --participants 3 \
		--task digits-mlp --eval-batch 16 --partition dirichlet --alpha 0.5 --rule best-share \
		--start-delay $(START_DELAY)
	$(BIN)/zkpot testnet up $(TESTNET_DIR) --rounds 5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
