# Convenience targets; `./dev` does the work (and needs no make on a fresh machine).
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test quick clean

setup:
	./dev setup

demo:
	./dev demo $(DEMO_ARGS)

test:
	./dev test $(PYTEST_ARGS)

quick:
	./dev quick $(PYTEST_ARGS)

clean:
	rm -rf .venv .pytest_cache build *.egg-info .cache
