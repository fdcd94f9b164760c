# Shortcuts for the usual LightBrain steps; each is a script or `lightbrain` verb you can also run directly.
#   make quickstart SOURCE=../shared/data      # fresh clone -> trained model, evaluated, plotted, sampled
#   make train CONFIG=configs/tiny_cpu.yaml ARGS="train.max_iters=100"
#   make generate PROMPT="In a study on cardiovascular disease,"
# Research and education only: generated text is not medical advice.

PYTHON     ?= .venv/bin/python
SOURCE     ?= hub
CONFIG     ?= configs/tiny_cpu.yaml
CHECKPOINT ?= models/lightbrain_tiny_v1.0.pt
LOG_DIR    ?= logs
PROMPT     ?= The patient presented with symptoms of fever and cough.
ARGS       ?=

.PHONY: help setup structure quickstart quick test prepare train generate plot

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup:  ## create .venv and install LightBrain with every extra
	bash scripts/setup_env.sh

structure:  ## create data/, models/ and logs/ folders
	$(PYTHON) create_project_structure.py

quickstart:  ## environment, data, training, evaluation, plots and samples in one go (SOURCE, CONFIG, MINUTES)
	SOURCE="$(SOURCE)" CONFIG="$(CONFIG)" MINUTES="$(MINUTES)" bash scripts/quickstart.sh $(ARGS)

quick:  ## the quickstart as a one-minute smoke run on a toy model (in runs/quick)
	QUICK=1 SOURCE="$(SOURCE)" bash scripts/quickstart.sh $(ARGS)

test:  ## the test suite
	bash scripts/run_tests.sh $(ARGS)

prepare:  ## token files in data/processed from SOURCE (hub or a local folder)
	bash scripts/prepare_data.sh --source "$(SOURCE)" $(ARGS)

train:  ## train CONFIG on data/processed
	bash scripts/train_model.sh -c "$(CONFIG)" $(ARGS)

generate:  ## continue PROMPT with CHECKPOINT
	bash scripts/generate_text.sh --checkpoint "$(CHECKPOINT)" -p "$(PROMPT)" $(ARGS)

plot:  ## loss curves and attention maps into LOG_DIR
	$(PYTHON) -m lightbrain plot loss --log-dir "$(LOG_DIR)"
	$(PYTHON) -m lightbrain plot attention --checkpoint "$(CHECKPOINT)" -p "$(PROMPT)" -o "$(LOG_DIR)/attention.png"
