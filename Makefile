# The two commands the README promises. Both install into ./.venv first (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision wheels this project is tested with; override on other machines (e.g. a CUDA runner).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

demo: install
	$(BIN)/apb validate
	$(BIN)/apb demo --out demo-out

test: install
	$(BIN)/apb validate
	$(BIN)/apb leaderboard --check
	$(BIN)/python -m pytest -q
