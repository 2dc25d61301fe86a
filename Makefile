# Two commands do all set-up: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ROOT ?= assets/demo_data
PORT ?= 8501

.PHONY: run test venv demo-data demo-assets bench clean

venv: $(STAMP)

# One pip call installs every pin together (torch/torchvision pinned so nothing pulls another torch).
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -e .
	@touch $(STAMP)

demo-data: $(STAMP)
	@test -f $(DEMO_ROOT)/.complete || $(VENV)/bin/esnet data demo --out $(DEMO_ROOT)

run: $(STAMP) demo-data
	$(VENV)/bin/streamlit run streamlit_app.py --server.port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) benchmarks/eval_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
