# FlowForge developer commands. Each target does its own set-up on a fresh Debian/Ubuntu.
#   make dev    run the API and a worker against a PostgreSQL kept in .dev/ (Ctrl-C stops
#               all; make dev-reset wipes the database)
#   make unit   the tests that need no database (tests/unit)
#   make test   lint + every test (unit, integration on real PostgreSQL, deploy on a real
#               systemd host) with coverage
#   make vm     a local Debian 12 systemd host (nspawn) deployed with deploy.yml
#   make vagrant-box   the box and host network for `vagrant up --provider=lxc` (root)
#   make bench  the API, queue, scale, seeding and bulk creation benchmarks (figures in
#               bench/results/)

VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages. `make dev` needs only the first set (PostgreSQL's server binaries and
# venv); the tests, the systemd host (debootstrap, nspawn, NAT), the load generator,
# Vagrant and vagrant-libvirt (validate the Vagrantfile's providers), Prometheus (promtool checks the alert rules in
# deploy/prometheus/), chromium (the browser tests) and HAProxy with socat (the balancer
# role's flowforge-lb against a local HAProxy) are the test set: add test-time packages there.
DEV_APT_PACKAGES := postgresql-15 python3-venv
TEST_APT_PACKAGES := debootstrap systemd-container iptables iproute2 \
	openssh-client rsync wrk curl vagrant vagrant-libvirt prometheus chromium chromium-driver \
	haproxy socat
APT_PACKAGES := $(DEV_APT_PACKAGES) $(TEST_APT_PACKAGES)
# Wait for another apt/dpkg (unattended-upgrades, a second terminal) instead of failing.
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -o DPkg::Lock::Timeout=600
# `vagrant up --provider=lxc` (make vagrant-box, and the Vagrant test in make test / deploy-test):
# Debian's vagrant-lxc provider, LXC (lxc-net: bridge, dnsmasq, NAT) and bridge-utils (the
# plugin calls brctl for its private-network bridge but does not depend on it). Only the
# targets that need them add them to system-deps (a target-specific EXTRA_PACKAGES reaches
# its prerequisites), so `make dev` does not install them.
VAGRANT_LXC_PACKAGES := vagrant vagrant-lxc lxc bridge-utils

.PHONY: dev test lint unit deploy-test vm vm-destroy vagrant-box vagrant-net-down bench \
	system-deps dev-deps dev-reset venv clean

# Installs the packages of $(1) that are missing (and says which).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing "(waiting for the dpkg lock if another apt holds it)"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends $$missing; \
	fi
endef

system-deps:
	$(call apt_install,$(APT_PACKAGES) $(EXTRA_PACKAGES))

dev-deps:
	$(call apt_install,$(DEV_APT_PACKAGES))

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# What running needs, no more (make dev): the package with its runtime dependencies.
$(VENV)/.runtime: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# coverage measures the test process and every `flowforge` process the tests start
# (pyproject: [tool.coverage.run] patch), then combines them into one figure.
test: EXTRA_PACKAGES := $(VAGRANT_LXC_PACKAGES)
test: system-deps venv lint
	$(VENV)/bin/coverage erase
	$(VENV)/bin/coverage run -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report

# only tests/unit: no database, no systemd host (seconds to a minute)
unit: venv
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# only the deploy tests: a fresh systemd host deployed by deploy.yml (3-4 minutes, root), and
# `vagrant up --provider=lxc` end to end (tests/deploy/test_vagrant.py, marker vagrant)
deploy-test: EXTRA_PACKAGES := $(VAGRANT_LXC_PACKAGES)
deploy-test: system-deps venv
	$(VENV)/bin/pytest tests/deploy $(PYTEST_ARGS)

dev: dev-deps $(VENV)/.runtime
	$(PY) tools/devstack.py

# Wipe make dev's database (stop make dev first). As root the cluster lives in
# /var/lib/flowforge-dev/<hash> (tools/devstack.py, cluster_dir) and .dev/pg links to it.
dev-reset:
	@if [ -f .dev/pg/data/postmaster.pid ]; then \
		echo "make dev-reset: make dev is still running (stop it with Ctrl-C first)"; exit 2; fi
	@if [ -L .dev/pg ]; then echo rm -rf "$$(readlink -f .dev/pg)"; rm -rf "$$(readlink -f .dev/pg)"; fi
	rm -rf .dev

vm: system-deps venv
	deploy/testhost/up.sh

vm-destroy:
	deploy/testhost/down.sh

# `vagrant up --provider=lxc` without a hypervisor (root): the box flowforge/bookworm-lxc made
# from the test host's Debian 12 root (reused once added), and lxc-net on the host.
vagrant-box: EXTRA_PACKAGES := $(VAGRANT_LXC_PACKAGES)
vagrant-box: system-deps venv
	deploy/vagrant-lxc/build-box.sh
	deploy/vagrant-lxc/host-net.sh up

# after `vagrant destroy -f`: stop lxc-net if vagrant-box started it, ip_forward as it was
vagrant-net-down:
	deploy/vagrant-lxc/host-net.sh down

bench: system-deps venv
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/bench_api.py
	$(PY) bench/bench_worker.py
	$(PY) bench/bench_worker_cpu.py
	$(PY) bench/bench_scale.py
	$(PY) bench/bench_write_paths.py
	$(PY) bench/bench_seed.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_soak.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache .ruff_cache dist build
