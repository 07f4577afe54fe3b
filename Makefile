# Two commands do all the set-up on a fresh clone:
#   make demo   installs what it needs, then runs `coopgrid demo`
#   make test   installs what it needs, then runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench mutate clean browser korean

ANVIL  := node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "coopgrid needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coopgrid demo

# anvil (a local Ethereum node) for the JSON-RPC ledger tests, from the npm registry
$(ANVIL):
	npm install --no-save --no-audit --no-fund --prefix $(CURDIR) @foundry-rs/anvil-linux-amd64

# Debian's chromium for the dashboard's browser test (Playwright drives it, and never downloads a
# browser of its own); where it cannot be installed, that one test is skipped and says why
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "no apt-get here: not installing chromium; the dashboard's browser test will be skipped"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "not root: not installing chromium (sudo apt-get install chromium); the browser test will be skipped"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
		|| echo "apt-get could not install chromium; the dashboard's browser test will be skipped"; \
	fi

# Korean OCR out of the box: Debian's kor.traineddata (found on the OCR task's default search path)
# and a Korean font for the test that renders Korean text; skipped with a reason where apt cannot
KOR_DATA := /usr/share/tesseract-ocr/5/tessdata/kor.traineddata
KOR_FONT := /usr/share/fonts/truetype/nanum/NanumGothic.ttf
korean:
	@if [ -f $(KOR_DATA) ] && [ -f $(KOR_FONT) ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "no apt-get here: not installing tesseract-ocr-kor and fonts-nanum; the Korean OCR tests will be skipped"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "not root: not installing tesseract-ocr-kor fonts-nanum (sudo apt-get install them); the Korean OCR tests will be skipped"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			tesseract-ocr-kor fonts-nanum >/dev/null \
		|| echo "apt-get could not install tesseract-ocr-kor fonts-nanum; the Korean OCR tests will be skipped"; \
	fi

# two passes: the tests in parallel processes, then alone those that restart a shared server
test: $(STAMP) $(ANVIL) browser korean
	$(PY) -m pytest -m "not serial"
	$(PY) -m pytest -n 0 -m serial

bench: $(STAMP)
	$(PY) bench/dispatch.py

# Mutation testing of the pure core with mutmut (not part of CI; about an hour on 2 cores): the
# trust decisions, the Merkle tree, the EIP-712 digest, each task type's comparator. One group at
# a time (mutmut reruns only what changed); then the kill rate and the survivors. Settings are in
# pyproject.toml's [tool.mutmut]. PYTHONPATH is cleared: the mutants must be imported from mutants/.
MUTANTS := 'coopgrid.coordinator.trust*' 'coopgrid.ledger.merkle*' \
	'coopgrid.protocol.x_batch_digest*' 'coopgrid.protocol.x__domain_separator*' \
	'coopgrid.protocol.x__type_hash*' 'coopgrid.protocol.x_eip712*' 'coopgrid.tasks.*agree*'

mutate: $(STAMP)
	$(PY) -m pip install --quiet -e '.[mutate]'
	for group in $(MUTANTS); do env -u PYTHONPATH $(VENV)/bin/mutmut run "$$group" || exit 1; done
	$(PY) bench/mutation.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache mutants
