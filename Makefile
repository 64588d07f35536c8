# Two entry points do all the set-up on a fresh Debian 12 machine (root):
#   make demo   - install everything, then run `ovault demo`
#   make test   - install everything, then run the whole test suite
# Both are idempotent: scripts/setup.sh only installs what is missing.
PY := .venv/bin/python
DEMO_ARGS ?=

.PHONY: setup demo test quick lint clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/ovault demo $(DEMO_ARGS)

test: setup
	.venv/bin/python -m pytest tests $(PYTEST_ARGS)

quick: setup
	.venv/bin/python -m pytest tests -m "not e2e and not browser" $(PYTEST_ARGS)

clean:
	rm -rf .venv .pytest_cache build *.egg-info
