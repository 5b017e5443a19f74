# The two commands of the README: `make demo` (build + boot test on the test media) and `make test`.
# Both install what they need on a fresh Debian 12 machine (as root) and are safe to re-run.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
SIB := $(VENV)/bin/sles-ipa-builder
STAMP := $(VENV)/.setup-done
APT_PACKAGES := python3 python3-venv python3-guestfs libguestfs-tools linux-image-amd64 qemu-system-x86 \
	qemu-utils debootstrap rpm createrepo-c zypper cpio zstd git openssl shellcheck busybox-static \
	gdisk dosfstools btrfs-progs e2fsprogs ca-certificates acl xz-utils fdisk iproute2 ovmf mtools \
	skopeo docker-registry apache2-utils minisign openssh-client xorriso gpgv gnupg \
	qemu-user-static binfmt-support qemu-system-arm qemu-efi-aarch64
# only for `make image` (image/build.py)
IMAGE_APT_PACKAGES := podman debootstrap
# libguestfs and qemu guests hang under KVM on some hosts; the tool falls back by itself,
# tests and demo go straight to TCG unless the caller says otherwise.
export LIBGUESTFS_BACKEND_SETTINGS ?= force_tcg
export SIB_ACCEL ?= tcg

.PHONY: setup binfmt media test test-root test-aarch64 check docs demo bench clean image test-image

setup: $(STAMP) binfmt

# aarch64 targets on an x86_64 host run under qemu-user: binfmt_misc is not mounted on a fresh
# machine, and the handler must be registered (qemu-user-static's has the F flag chroots need).
binfmt: $(STAMP)
	@[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	@[ "$$(uname -m)" = aarch64 ] || [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

$(STAMP): pyproject.toml Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -c 'import guestfs, pycdlib, git, zstandard' # python3-guestfs must be visible in the venv
	touch $@

media: setup
	$(SIB) fixtures

# The tests come in three tiers, one folder each (markers follow the folders, see tests/conftest.py):
#   tests/unit/  pure Python on temp dirs, needs no root                 (`make check`)
#   tests/root/  as root: chroot, mounts, namespaces, hooks on small trees (`make test-root`)
#   tests/vm/    the generated test media, libguestfs, QEMU boots, real Ironic, the registry, aarch64
# `make test` runs all three.
test: media
	$(PY) -m pytest -v -p no:cacheprovider --durations=30 tests

# The root tier alone: no test media, no VM.
test-root: setup
	$(PY) -m pytest -v -p no:cacheprovider -m "not vm" tests/root

# The aarch64 cross build and boot (tests/vm/test_aarch64.py) alone; `make test` runs it too.
test-aarch64: setup
	SIB_TEST_AARCH64=1 $(PY) -m pytest -v -p no:cacheprovider tests/vm/test_aarch64.py

# The builder as a container image, from Debian packages (no registry): image/build.py, docs/container.md.
image: $(STAMP)
	@command -v podman >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_APT_PACKAGES)
	$(PY) image/build.py

# The image's checks (tests/vm/test_container_image.py); builds the image when this commit's tag is missing.
test-image: media
	$(PY) image/build.py --if-missing
	SIB_TEST_IMAGE=1 $(PY) -m pytest -v -p no:cacheprovider tests/vm/test_container_image.py

# Lint, types and the unit tier (its few tests marked vm or slow are left to `make test`).
check: setup
	$(VENV)/bin/ruff check sles_ipa_builder tests bench image
	$(VENV)/bin/mypy sles_ipa_builder
	$(PY) -m pytest -q -m "not vm and not slow" tests/unit

# docs/settings.md is written from the settings table (tests/test_docs.py fails when it is stale).
docs: $(STAMP)
	$(PY) -m sles_ipa_builder.config.docs > docs/settings.md

# The build ends with the quick fake-API boot test; then a real Ironic inspects, cleans and deploys
# through the ramdisk in BIOS and UEFI mode (docs/verification.md).
demo: media
	$(SIB) build --config "$$($(SIB) fixtures --print-profile)" --boot-test
	$(SIB) boot-test --config "$$($(SIB) fixtures --print-profile)" --ironic

bench: media
	$(PY) bench/pack.py
	$(PY) bench/root.py
	$(PY) bench/build.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
