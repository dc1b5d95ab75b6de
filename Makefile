# Two commands work on a fresh machine: `make run` and `make test`. Both create .venv and install
# everything the project needs from its own files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

RADDRAFT_PORT ?= 11112
RADDRAFT_AE ?= RADDRAFT

.PHONY: run service test test-fast lint setup bench model screenshots clean

$(STAMP): pyproject.toml requirements/nlp-no-deps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[cpu]'
	$(PIP) install --quiet --no-deps -r requirements/nlp-no-deps.txt
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install --quiet -e '.[cpu,dev,train,installer,server]'
	touch $@

setup: $(DEV_STAMP)

# The desktop app, hosting the DICOM node on RADDRAFT_PORT (needs a display; `make service` runs headless).
run: $(STAMP)
	$(VENV)/bin/raddraft app --port $(RADDRAFT_PORT) --ae-title $(RADDRAFT_AE)

service: $(STAMP)
	$(VENV)/bin/raddraft service --port $(RADDRAFT_PORT) --ae-title $(RADDRAFT_AE)

# Two test processes (pytest-xdist, one file per process at a time so module fixtures are built once): the
# suite waits on peers, subprocesses and quiet periods as much as it computes. Tests marked `solo` measure
# timing and run alone afterwards. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: $(DEV_STAMP) lint
ifeq ($(TEST_WORKERS),0)
	$(PY) -m pytest --durations=25
else
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not solo" --durations=25
	$(PY) -m pytest -m solo
endif

test-fast: $(DEV_STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(DEV_STAMP)
	$(VENV)/bin/lint-imports

bench: $(DEV_STAMP)
	$(PY) bench/node_ingest.py

# Reproduces the embedded default model in resources/models/raddraft-phantom-cxr/: the first recipe trains it
# from scratch (about 40 min on 2 quiet cores), the second continues its stage 2 from the checkpoint the first
# wrote there, teaching it that the findings it is given win over the image, and writes the bundle back
# (about 20 min); the third continues that checkpoint and teaches it to compare with a prior study (about
# 4 h; its header says how the shipped 1.4.0 was made).
model: $(DEV_STAMP)
	$(VENV)/bin/raddraft train --config training/configs/phantom-cxr.toml
	$(VENV)/bin/raddraft train --config training/configs/phantom-cxr-follows.toml
	$(VENV)/bin/raddraft train --config training/configs/phantom-cxr-priors.toml

# docs/app-main.png and docs/app-worklist.png: the app with phantom studies and their drafts (under Xvfb).
# SCREENSHOT_MODEL=BUNDLE picks the bundle; default: the embedded one, else a tiny random one (gibberish text).
screenshots: $(DEV_STAMP)
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) scripts/screenshots.py $(if $(SCREENSHOT_MODEL),--model $(SCREENSHOT_MODEL))

# The installed app (installer/README.md): a PyInstaller one-folder bundle of the runtime, checked to carry no
# training stack, and its Linux archive, under build/installer/cpu/. `make installer GPU=1` freezes the GPU
# variant from its own venv (build/venv-gpu, onnxruntime-gpu) into build/installer/gpu/. The self-test's
# sample study in resources/samples/ was written by `$(PY) installer/make_sample.py`.
INSTALLER_STAMP := $(VENV)/.installed-installer
GPU_VENV := build/venv-gpu
.PHONY: installer installer-deps

$(INSTALLER_STAMP): $(STAMP) pyproject.toml
	$(PIP) install --quiet -e '.[cpu,installer]'
	touch $@

installer-deps: $(INSTALLER_STAMP)

ifeq ($(GPU),1)
installer:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_VENV)/bin/python -m pip install --quiet -e '.[gpu,installer]'
	$(GPU_VENV)/bin/python -m pip install --quiet --no-deps -r requirements/nlp-no-deps.txt
	$(GPU_VENV)/bin/python installer/build.py
else
installer: $(INSTALLER_STAMP)
	$(PY) installer/build.py
endif

clean:
	rm -rf $(VENV) build dist .pytest_cache
