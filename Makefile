# swavnb: `make study` sets up and runs the CPU-sized study, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PRESET ?= quick
# the offline copy beside the checkout when there is one, else ./data (downloaded on first use)
SWAVNB_DATA ?= $(if $(wildcard ../shared/data/cifar-100-python/train),$(abspath ../shared/data),$(abspath data))
export SWAVNB_DATA
# the CPU's vector capability (avx2, avx512, ...) names measurement files, so one CPU kind's figures
# never overwrite another's; expanded when used, after setup
CPU_KIND = $(shell $(BIN)/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability().lower())')

.PHONY: setup study demo test lint bench bench-curve clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

study: setup  ## the whole study (pretrain, fine-tune, probes, results) at PRESET size
	$(BIN)/python -m swavnb.study --preset $(PRESET)

demo: setup  ## a one-minute smoke pretraining that prints the loss falling
	$(BIN)/python -m swavnb.pretrain --preset smoke --aug flip --out runs/demo --epochs 4

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check swavnb tests experiments

bench: setup  ## throughput of our training step vs the torchvision DataLoader pipeline
	$(BIN)/python -m swavnb.bench --json results/bench-cpu-$(CPU_KIND).json

bench-curve: setup  ## the same quick run through both pipelines: do the loss curves agree?
	$(BIN)/python -m swavnb.loss_curve --json results/loss-curve-cpu-$(CPU_KIND).json --figures figures

clean:
	rm -rf runs .pytest_cache
