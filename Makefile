# `make book`: the book (executes every chapter in the `ci` profile, builds _build/html).
# `make test`: unit tests, every chapter executed, the papers' claims checked, the book built with warnings as errors.
# `make reproduce`: every chapter at seeds 0, 1, 2 and one table of every claim's figure per seed (mean ± sd).
# `make colab-smoke`: every chapter in the `colab` profile on this CPU, offline, at toy scale (tools/colab_smoke.py):
#   fixture datasets in the real formats downloaded from a loopback server, fake ImageNet weights, XAI_ROBUST_SMOKE=1;
#   prints each chapter's wall time, executed copies in _build/colab-smoke/.
# `make lint`: ruff over the package, tests, tools, benchmarks and notebooks (configured in pyproject.toml).
# Both create .venv and install what they need (pinned by constraints.txt) on first use.
# `make check-book`: every page of _build/html in headless Chromium at 1280 and 400 px (tools/check_book.py): fails on
#   broken images or links, raw {glue, PosixPath(, text tables, figures wider than the page, untypeset math;
#   screenshots and the report in _build/check-book/. Installs Chromium (Debian) when missing.
# `make mathjax`: MathJax 3 from the npm registry into _build/mathjax/es5; tools/book.py build copies it into
#   _build/html/_static/mathjax, so the book typesets its equations without a CDN.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export XAI_ROBUST_RESULTS := $(CURDIR)/results
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test lint unit chapters claims html html-strict reproduce clean mathjax chromium check-book colab-smoke

MATHJAX_VERSION := 3.2.2
MATHJAX_STAMP := _build/mathjax/.mathjax-$(MATHJAX_VERSION)

$(VENV)/.installed-%: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$*]"
	touch $@

book: $(VENV)/.installed-book mathjax
	$(PY) tools/book.py execute
	$(PY) tools/book.py build

test: $(VENV)/.installed-test mathjax
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests --ignore=tests/test_claims.py -q
	$(PY) tools/book.py execute
	$(PY) tools/book.py build -W
	$(PY) -m pytest tests/test_claims.py -q -rs
	XAI_ROBUST_SOLUTIONS=1 $(PY) -m pytest tests/test_solutions.py -q

colab-smoke: $(VENV)/.installed-test
	$(PY) tools/colab_smoke.py

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

html: $(VENV)/.installed-book mathjax
	$(PY) tools/book.py build

# MathJax 3's es5/ folder from the npm registry (npm checks the tarball's integrity); tools/book.py copies it
mathjax: $(MATHJAX_STAMP)

$(MATHJAX_STAMP):
	command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm)
	rm -rf _build/mathjax && mkdir -p _build/mathjax
	cd _build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null \
		&& tar -xzf mathjax-$(MATHJAX_VERSION).tgz && mv package/es5 es5 && rm -rf package mathjax-$(MATHJAX_VERSION).tgz
	test -f _build/mathjax/es5/tex-mml-chtml.js
	touch $@

chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# builds the HTML first when it is missing or was built without the local MathJax (needs executed chapters)
check-book: $(VENV)/.installed-book mathjax chromium
	test -f _build/html/_static/mathjax/tex-mml-chtml.js || $(PY) tools/book.py build
	$(PY) tools/check_book.py --html _build/html --out _build/check-book

clean:
	rm -rf _build results
