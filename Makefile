# Entry points for a fresh machine: `make demo`, `make test` and `make lint` (the gate CI runs first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU threads for `make demo THREADS=N`; unset: YOCO_THREADS, else OMP_NUM_THREADS, else yoco's auto policy
THREADS ?=

.PHONY: demo test lint install bench docs completions clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,ray,hub]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/yoco $(if $(THREADS),--threads $(THREADS)) pipeline --plot out/demo-report.png --markdown out/demo-report.md

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -p no:cacheprovider

# ruff (yoco_cli, tests, benchmarks) and mypy (yoco_cli), both configured in pyproject.toml and pinned in constraints.txt
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

docs: $(STAMP)
	YOCO_HOME=$$(mktemp -d) $(BIN)/yoco pipeline digits --to 1 2 5 --seeds 3 --repeats 3 --tables all \
		--markdown docs/results-digits.md --plot docs/results-digits.png

completions: $(STAMP)
	$(BIN)/python -m yoco_cli.cli.completion_scripts completions

bench: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
