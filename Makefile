# Two commands on a fresh machine: `make serve` and `make test`. `make bench` measures.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: install serve test bench perf-tools system-packages clean

install: $(STAMP)

# torch is pinned to the CPU build this machine keeps on disk; an unpinned torch pulls a multi-GB CUDA build.
# nvidia-pytriton only supplies the tritonserver binary, so its numpy<2 pin is skipped with --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[server,test,bench]'
	$(BIN)/pip install -q --no-deps nvidia-pytriton==0.7.0
	touch $@

serve: install
	$(BIN)/bertserve serve --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

test: install perf-tools
	$(BIN)/python -m pytest

bench: install perf-tools
	$(BIN)/python -m perf

# perf_analyzer ships in the tritonclient 2.51.0 wheel (the last that runs on glibc 2.36) and needs libcudart;
# infinity-emb, a peer server measured as a baseline, gets its own environment (it pins other transformers).
perf-tools: $(TOOLS)/.installed

$(TOOLS)/.installed: | system-packages $(STAMP)
	$(BIN)/pip install -q --target $(TOOLS)/perf_analyzer --no-deps tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.9.79
	$(PYTHON) -m venv $(TOOLS)/infinity
	$(TOOLS)/infinity/bin/pip install -q torch==2.13.0 'infinity-emb[server,torch]==0.0.78'
	touch $@

# Debian packages: docker-compose validates docker-compose.yml (no Docker engine needed); libb64 for perf_analyzer.
system-packages:
	@if ! command -v docker-compose >/dev/null || ! ldconfig -p | grep -q libb64.so.0d; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq docker-compose libb64-0d >/dev/null; \
		else echo "install the Debian packages docker-compose and libb64-0d as root; tests needing them will fail or skip"; fi; \
	fi

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
