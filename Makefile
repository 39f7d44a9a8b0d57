# The two commands the README promises. Both install into ./.venv first (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision wheels this project is tested with; override on other machines (e.g. a CUDA runner).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test browser-deps
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
	$(BIN)/apb docs --check
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# Debian's chromium and its driver, for the site's browser test (tests/test_site_browser.py skips without them).
# Needs root and apt-get (CI has both); a no-op where both are installed.
browser-deps:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
