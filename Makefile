# Two entry points for a new user: `make demo` and `make test`. Both build .venv from scratch when needed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv gl browser sims proof bench bench-gpu bench-peers test-lerobot-env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the pinned CPU build (a looser pin would drag a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP) gl
	$(BIN)/python -m lake.demo
	@echo "browse the demo lakes: $(BIN)/lake serve --lake lake_demo (or lake_demo_reach)  ->  open http://127.0.0.1:8470/"

test: $(STAMP) gl
	$(BIN)/python -m pytest -q

# MuJoCo (Meta-World is in the base install: `make demo` ends on its reach task) loads a GL library at import.
# Idempotent: apt runs only when one of the Debian packages is missing; elsewhere it only says what is needed.
gl:
	@if ! command -v dpkg >/dev/null; then echo "not Debian: MuJoCo needs libEGL/libGL or OSMesa (install them if import mujoco fails)"; \
	elif dpkg -s $(SIMS_DEBS) >/dev/null 2>&1; then :; \
	else SUDO=$$([ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null && echo sudo); \
	$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SIMS_DEBS); fi

# Headless Chromium + chromedriver from Debian for the lake serve tests (tests/serve skip without them).
# Idempotent: installs only what is missing.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium and chromedriver present"; \
	else SUDO=$$([ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null && echo sudo); \
	$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi

# Real 3-D simulators (Meta-World, LIBERO) and the headless GL libraries MuJoCo renders with (EGL, OSMesa
# fallback). Idempotent: apt runs only when a library is missing, pip only when the stamp is older than pyproject.
SIMS_DEBS := libegl1 libgl1 libegl-mesa0 libosmesa6
SIMS_STAMP := $(VENV)/.sims-installed

$(SIMS_STAMP): $(STAMP) pyproject.toml
	dpkg -s $(SIMS_DEBS) >/dev/null 2>&1 || { apt-get update -q && \
	  apt-get install -y -q --no-install-recommends $(SIMS_DEBS); }
	$(BIN)/python -m pip install -q -e '.[test,sims]'
	touch $(SIMS_STAMP)

sims: $(SIMS_STAMP)

# The learning proof (issue 16), Meta-World tasks and LIBERO's libero_goal/6 (skipped without the sims extra):
# demos -> lake -> pack -> SFT -> eval, then RL; long (about an hour per task on 2 busy cores), not a timing:
# niced, one torch thread; each task's result is saved as it finishes and
# benchmarks/RESULTS.md + PNGs are rebuilt from what is there (rerun to continue).
proof: $(STAMP)
	OMP_NUM_THREADS=1 nice -n 15 $(BIN)/python benchmarks/closed_loop.py --record
	# RL of the VLA itself (push-v3, section "RL fine-tunes the VLA itself"): a short SFT run as the start (room to
	# improve; its SFT section is not recorded), then aa RL in a KL trust region, the checkpoint chosen on validation
	# goals, three RL seeds; ~10 min each on 2 quiet cores
	OMP_NUM_THREADS=1 nice -n 15 $(BIN)/python benchmarks/closed_loop.py --tasks push-v3 --demos 300 --sft-steps 400 \
	  --width 64 --ckpt-points 2 --rl-task none --workdir closed_loop_work/v3
	for s in 1 12 21; do OMP_NUM_THREADS=1 nice -n 15 $(BIN)/python benchmarks/closed_loop.py --tasks --rl-task push-v3 \
	  --rl-policy vla --rl-init 200 --rl-exec-steps 4 --rl-x0-zero --rl-group 8 --rl-batch 32 --rl-lr 1e-4 \
	  --rl-segments 4 --rl-versions 2 --rl-target-kl 0.2 --rl-select val --rl-seed $$s --rl-name sel_kl0.2_s$$s \
	  --workdir closed_loop_work/v3 --record || exit 1; done

# Every speed claim, against its baseline, recorded into benchmarks/RESULTS.md (run on an idle machine).
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/ingest.py --record
	$(BIN)/python benchmarks/packing.py --record
	$(BIN)/python benchmarks/pack_memory.py --record
	$(BIN)/python benchmarks/stream.py --record
	$(BIN)/python benchmarks/packed_vs_padded.py
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/fp8.py
	$(BIN)/python benchmarks/rl.py --record

# On a GPU machine (the device tool's H100 / H200, whose python3 has torch and pytest; nothing else is needed):
# CUDA kernels vs the exact path, FP8 vs bf16, and the training benchmarks at π0.5 widths in bf16. Figures go to
# $(GPU_OUT) (the device's $$OUT), to be copied into benchmarks/RESULTS.md.
GPU_OUT ?= gpu_out
bench-gpu:
	mkdir -p $(GPU_OUT)
	python3 -m pytest --noconftest -q -rs tests/training/test_cuda.py 2>&1 | tee $(GPU_OUT)/test_cuda.txt
	python3 benchmarks/fp8.py --out $(GPU_OUT) --no-write 2>&1 | tee $(GPU_OUT)/fp8.txt
	python3 benchmarks/fp8.py --compile --out $(GPU_OUT) --no-write 2>&1 | tee $(GPU_OUT)/fp8_compiled.txt
	python3 benchmarks/attention.py --device cuda --dtype bfloat16 --pi05-size --no-write 2>&1 | tee $(GPU_OUT)/attention.md
	python3 benchmarks/packed_vs_padded.py --device cuda --dtype bfloat16 --pi05-size --no-write 2>&1 | tee $(GPU_OUT)/packed_vs_padded.md

# LeRobot 0.4.4 as a peer to benchmark against, in its own venv (it pins its own torch: a CUDA build from PyPI).
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(PEERS_STAMP):
	test -x $(PEERS)/bin/python || $(PY) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	$(PEERS)/bin/python -m pip install -q lerobot==0.4.4 psutil
	# torchcodec (LeRobot's default video backend) loads the system FFmpeg 4-8 shared libraries (bookworm: 5.1)
	$(PEERS)/bin/python -c 'import torchcodec.decoders' 2>/dev/null || { apt-get update -q && \
	  apt-get install -y -q --no-install-recommends libavutil57 libavcodec59 libavformat59 libavdevice59 \
	  libavfilter8 libswscale6 libswresample4; } || echo 'no FFmpeg libraries: LeRobot will use video_backend="pyav"'
	touch $(PEERS_STAMP)

bench-peers: $(STAMP) $(PEERS_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/lerobot_peers.py

# The project inside a LeRobot 0.4.x environment (its av 15, older fsspec/s3fs: .ci/lerobot-0.4.4-constraints.txt),
# in a second venv: the lake and LeRobotStyleDataset tests must pass there too.
LRENV := .venv-lerobot
LRENV_STAMP := $(LRENV)/.installed
LR_CONSTRAINTS := .ci/lerobot-0.4.4-constraints.txt

$(LRENV_STAMP): pyproject.toml $(LR_CONSTRAINTS)
	test -x $(LRENV)/bin/python || $(PY) -m venv $(LRENV)
	$(LRENV)/bin/python -m pip install -q --upgrade pip
	$(LRENV)/bin/python -m pip install -q torch==2.13.0
	$(LRENV)/bin/python -m pip install -q -c $(LR_CONSTRAINTS) -e '.[test]'
	touch $(LRENV_STAMP)

test-lerobot-env: $(LRENV_STAMP)
	$(LRENV)/bin/python -c 'import av, fsspec, s3fs; print("LeRobot env: av", av.__version__, "fsspec", fsspec.__version__, "s3fs", s3fs.__version__)'
	$(LRENV)/bin/python -m pytest -q tests/lake/test_ingest.py tests/lake/test_decoded.py tests/lake/test_s3.py \
	  tests/loaders/test_lerobot_style.py tests/loaders/test_forks.py

clean:
	rm -rf $(VENV) $(PEERS) $(LRENV) lake_demo lake_demo_reach
