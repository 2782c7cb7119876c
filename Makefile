# The two commands a fresh machine needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[mcu,provision,pi,sim,dashboard,test,postgres]'
	touch $(STAMP)

# The demo fleet on the embedded defaults, with its dashboard (the URL is printed), until Ctrl-C.
DASHBOARD ?= 127.0.0.1:8080
demo: $(STAMP)
	PATH="$$PATH:/usr/sbin" $(BIN)/edgefleet demo --http $(DASHBOARD)

# Debian's mosquitto (and its clients: a test reads the fleet's traffic with mosquitto_sub) is
# what the end-to-end tests run against, OpenSSH's server the provisioning tests' Pi-class
# board, and sudo what its non-root SSH user installs root-owned files with (that test needs
# root to create the user, so sudo is only looked for as root), a C compiler for the TLS
# benchmark's malloc counter (tools/bench/malloc_count.c) and iproute2 for the tests whose boards
# sit in their own network namespace, Debian's chromium with its chromedriver for the
# dashboard's browser tests (Selenium drives /usr/bin/chromedriver; nothing is downloaded at
# run time), and Debian's PostgreSQL server for the registry tests on PostgreSQL (each run
# starts its own in a temporary data directory; the system service is never used); installed
# when missing and root.
system-deps:
	@if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } || ! command -v mosquitto_sub >/dev/null 2>&1 \
			|| [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ] || ! command -v cc >/dev/null 2>&1 \
			|| ! command -v ip >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromedriver ] \
			|| ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
			|| { [ "$$(id -u)" = 0 ] && ! command -v sudo >/dev/null 2>&1; }; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients openssh-server sudo gcc iproute2 chromium chromium-driver postgresql; \
		else \
			echo "make test needs mosquitto, sshd, a C compiler, iproute2, chromium and PostgreSQL: sudo apt-get install mosquitto mosquitto-clients openssh-server gcc iproute2 chromium chromium-driver postgresql" >&2; exit 1; \
		fi; \
	fi

test: $(STAMP) system-deps
	PATH="$$PATH:/usr/sbin" $(BIN)/python -m pytest

# Everything but the end-to-end fleet runs.
test-fast: $(STAMP)
	PATH="$$PATH:/usr/sbin" $(BIN)/python -m pytest -m "not e2e"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
