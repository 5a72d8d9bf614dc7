# Two commands for users: `make run` (set up + execute every notebook into build/) and `make test`.
# Everything installs into .venv with the exact pins of constraints.txt.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install data models run notebooks report test test-fast lab bench student grade mutate lint clean distclean lock

help:
	@echo "make run    set up, fetch MNIST, train/load models, execute every notebook into build/, write build/report.md"
	@echo "make test   set up, then the whole test suite (unit tests + every notebook in quick mode)"
	@echo "make lab    open JupyterLab on notebooks/"
	@echo "make bench  speed ratios -> build/bench.md      make student  student copies -> notebooks/student/"
	@echo "make grade SUBMISSIONS=folder   grade submitted notebooks -> build/grades/"

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(PYTHON) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

data: install
	$(PYTHON) -m helpers data

models: data
	$(PYTHON) -m helpers models

notebooks: models
	$(PYTHON) -m helpers notebooks

report:
	$(PYTHON) -m helpers report

run: notebooks report
	@echo ""
	@echo "Done. Executed notebooks (ipynb + html): build/notebooks/   results: build/results/   report: build/report.md"
	@echo "Open the notebooks interactively with: make lab"

test: models
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not notebook and not browser"

# kernels pick the inline backend themselves: a non-interactive backend set in the shell would hide every figure
lab: models
	env -u MPLBACKEND $(BIN)/jupyter lab notebooks/

bench: models
	$(PYTHON) -m benchmarks

student: install
	$(PYTHON) -m helpers.student notebooks

SUBMISSIONS ?= submissions
grade: install
	$(PYTHON) -m helpers.student grade $(SUBMISSIONS) --out build/grades

# mutation testing of the core math (setup.cfg [mutmut]); slow (hours on 2 cores), not part of CI.
# The kill rate and every surviving mutant go to tests/MUTANTS.md.
mutate: models
	nice $(PYTHON) tools/mutate.py --per-module 15 --seed 1 --workers 2

lint: install
	$(BIN)/ruff check helpers tests benchmarks
	$(BIN)/ruff check --extend-ignore E401,E402,E702,E731,I001 notebooks

lock:
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > constraints.txt

clean:
	rm -rf build .pytest_cache .hypothesis mutants

distclean: clean
	rm -rf $(VENV) data/mnist.npz data/mnist.npz.sha256 data/animal_shapes.npz data/animal_shapes.npz.sha256 data/models
