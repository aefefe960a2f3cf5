# swavnb: `make study` sets up and runs the CPU-sized study, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PRESET ?= quick
# two steps side by side, one thread each: 1.3x the pretraining throughput of one two-threaded process
# on a 2-core CPU (docs/performance.md)
JOBS ?= 2
# the offline copy beside the checkout when there is one, else ./data (downloaded on first use)
SWAVNB_DATA ?= $(if $(wildcard ../shared/data/cifar-100-python/train),$(abspath ../shared/data),$(abspath data))
export SWAVNB_DATA
# the hardware kind (cpu-avx2, cpu-avx512-avx512_bf16, nvidia-h200) names measurement files, so one
# kind's figures never overwrite another's; expanded when used, after setup
KIND = $(shell $(BIN)/python -c 'from swavnb.base.device import device_kind; print(device_kind())')

.PHONY: setup study demo lab test lint bench bench-curve clean

setup: $(VENV)/.installed $(VENV)/etc/jupyter/jupyter_server_config.d/swavnb.json

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# the notebooks' kernel, "swavnb (.venv)", and the Jupyter server extension that refuses saves over
# the published notebooks/ (swavnb/study/lab.py)
$(VENV)/etc/jupyter/jupyter_server_config.d/swavnb.json: $(VENV)/.installed swavnb/study/lab.py
	$(BIN)/python -m swavnb.study.lab --install

study: setup  ## the whole study (pretrain, fine-tune, probes, results) at PRESET size
	$(BIN)/python -m swavnb.study --preset $(PRESET) --jobs $(JOBS)

demo: setup  ## a one-minute smoke pretraining that prints the loss falling
	$(BIN)/python -m swavnb.pretrain --preset smoke --aug flip --out runs/demo --epochs 4

# notebooks/ holds the published notebooks; JupyterLab works on copies in lab/, made on first use and
# never replaced, and opens on the project root (figures/, results/, docs/ at hand) in lab/
lab: setup  ## JupyterLab on working copies of the notebooks (lab/), kernels reading the study's data
	$(BIN)/python -m swavnb.study.lab
	$(BIN)/jupyter lab --LabApp.default_url=/lab/tree/lab

# two pytest workers, one thread each; tests sharing a built study stay on one worker (conftest.py)
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

lint: setup
	$(BIN)/ruff check swavnb tests experiments

bench: setup  ## throughput of our training step vs the torchvision DataLoader pipeline
	$(BIN)/python -m swavnb.bench --json results/bench-$(KIND).json

bench-curve: setup  ## the same quick run through both pipelines: do the loss curves agree?
	$(BIN)/python -m swavnb.loss_curve --json results/loss-curve-$(KIND).json --figures figures

clean:
	rm -rf runs .pytest_cache
