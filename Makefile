# `make book`: the book (executes every chapter in the `ci` profile, builds _build/html).
# `make test`: unit tests, every chapter executed, the papers' claims checked, the book built with warnings as errors.
# `make reproduce`: every chapter at seeds 0, 1, 2 and one table of every claim's figure per seed (mean ± sd).
# `make lint`: ruff over the package, tests, tools, benchmarks and notebooks (configured in pyproject.toml).
# Both create .venv and install what they need (pinned by constraints.txt) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export XAI_ROBUST_RESULTS := $(CURDIR)/results
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test lint unit chapters claims html html-strict reproduce clean

$(VENV)/.installed-%: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$*]"
	touch $@

book: $(VENV)/.installed-book
	$(PY) tools/book.py execute
	$(PY) tools/book.py build

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests --ignore=tests/test_claims.py -q
	$(PY) tools/book.py execute
	$(PY) tools/book.py build -W
	$(PY) -m pytest tests/test_claims.py -q -rs

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

unit: $(VENV)/.installed-test
	$(PY) -m pytest tests --ignore=tests/test_claims.py -q

chapters: $(VENV)/.installed-book
	$(PY) tools/book.py execute

claims: $(VENV)/.installed-test
	$(PY) -m pytest tests/test_claims.py -q -rs

# every chapter at seeds 0, 1, 2: results/reproduction.json and the book's reproduction page (about 3x `chapters`)
reproduce: $(VENV)/.installed-book
	$(PY) tools/reproduce.py --seeds 0 1 2

html: $(VENV)/.installed-book
	$(PY) tools/book.py build

clean:
	rm -rf _build results
