# Set-up and everyday commands. Run as root on Debian for the system packages;
# as another user with the packages already installed everything else works too.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LISTEN ?= 127.0.0.1:8000
export DJANGO_SETTINGS_MODULE := backupsite.settings

# Debian packages: build deps of pycurl (ovirtsdk4), the data plane, SSH, the test browser, a
# Redis server the tests start on their own port (the Redis broker's queue), and the node's NFS
# exporter (NFS-Ganesha in user space) with libnfs' clients that the tests read its shares with;
# file-level restore's readers: sfdisk (fdisk), fuse2fs, ntfs-3g, xfsprogs and btrfs-progs (with
# e2fsprogs, dosfstools and mtools, also what the simulator makes its demo guests' disks with);
# the simulated hosts' storage network (a network namespace with its own rpcbind: iproute2, rpcbind)
# and qemu's nfs block driver (qemu-block-extra) that their VMs read NFS data domains with.
SYSTEM_PACKAGES := python3 python3-venv python3-dev gcc libcurl4-openssl-dev libssl-dev \
	qemu-utils qemu-system-common netcat-openbsd nbdkit openssh-server openssh-client chromium redis-server lvm2 util-linux \
	sshfs fuse3 openssl nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind iproute2 qemu-block-extra fdisk e2fsprogs fuse2fs ntfs-3g xfsprogs btrfs-progs \
	dosfstools mtools

.PHONY: run test bench lint format worker system-deps venv migrate clean

run: system-deps venv migrate
	$(PY) manage.py ensure_admin
	LISTEN=$(LISTEN) PY=$(PY) ./scripts/run

test: system-deps venv lint
	$(PY) manage.py init_secrets
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest --numprocesses=auto --maxprocesses=4 $(PYTEST_ARGS)

# Every benchmark of bench/ once, at a short size, then one table of their ratios; a bench that
# finds an impossible figure (nothing read, a zero duration, a copy unlike its source) fails the
# target. bench/soak.py is left out: it runs for hours (make test runs 20 backups of it).
# BENCH_ARGS="--warm" keeps the page cache; "--only backup,cbt" runs some.
bench: venv
	$(PY) bench/run_all.py $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

worker: venv migrate
	$(PY) manage.py worker

migrate: venv
	$(PY) manage.py init_secrets
	$(PY) manage.py migrate --noinput

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root (or install them): $$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
