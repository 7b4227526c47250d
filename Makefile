# mtkfs — developer entry points. `make demo` to see it work, `make test` to check it.
#
# Every target is safe to re-run: `deps` installs only what is missing, `venv` reinstalls only
# when pyproject.toml changed, `demo` reuses what an earlier run built or mounted.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed.stamp
PYTEST_ARGS ?=
BENCH_ARGS ?=

# System packages: FUSE (runtime + headers, pyfuse3 builds against libfuse3), a compiler, Python
# headers and venv, the tools the test images are built and checked with, and Debian's real adb
# server plus a static busybox for the fake Android phone the adb tests attach to it, and QEMU with
# Debian's U-Boot build for it: the real U-Boot the uboot: transport is tested against, and
# systemd for systemd-analyze (the mtkfs@.service unit is verified with it), dosfstools for a
# FAT image content detection is tested on, mtd-utils for mkfs.jffs2 (the jffs2 images the
# jffs2 view is tested on), mkbootimg (boot images for the boot view) and img2simg/simg2img
# (Android sparse images), zstd and gzip (the backup tests unpack dumps with the real tools).
APT_PACKAGES := fuse3 libfuse3-dev libusb-1.0-0 pkg-config gcc python3-venv python3-dev \
	e2fsprogs gdisk parted util-linux fdisk adb busybox-static qemu-system-arm u-boot-qemu \
	systemd dosfstools mtd-utils mkbootimg android-sdk-libsparse-utils zstd gzip

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: help deps venv lint test bench demo demo-clean clean

help:
	@echo "make demo        build a sample P-70A readback, mount it at ./mnt, loop-mount system.img"
	@echo "make demo-clean  unmount what the demo mounted and remove ./demo-data"
	@echo "make test        deps + venv + lint + the whole test suite"
	@echo "make bench       benchmarks through real mounts (root, ~2 min): prints a table"
	@echo "make deps        apt-get install the missing system packages (sudo when not root)"
	@echo "make venv        $(VENV) with mtkfs installed editable, with test tools"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make clean       remove the venv and caches"

deps:
	@if ! command -v dpkg-query >/dev/null; then \
		echo "deps: not a Debian/Ubuntu system; install by hand: $(APT_PACKAGES)"; exit 0; \
	fi; \
	missing=""; \
	for pkg in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed" \
			|| missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all system packages present"; exit 0; fi; \
	if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
		echo "deps: missing:$$missing; run as root or install sudo" >&2; exit 1; \
	fi; \
	echo "deps: installing$$missing"; \
	$(APT_GET) update -q; \
	$(APT_GET) install -y -q --no-install-recommends $$missing

venv: $(VENV_STAMP)

# Re-run only when pyproject.toml changed (or the venv is gone: the stamp lives inside it).
$(VENV_STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: a broken test tree, not a success.
test: deps venv lint
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

# Benchmarks are not tests (pytest collects only tests/): they print numbers, they do not judge.
# BENCH_ARGS, e.g. "--only 2 --json bench.json".
bench: deps venv
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

demo: deps venv
	scripts/demo.sh

demo-clean:
	scripts/demo.sh clean

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
