#!/bin/sh
# Install what tests/test_connection_ui.py needs for its browser test:
#   - Debian's chromium package at /usr/bin/chromium (never a browser download), when we are root with apt-get;
#   - the Python package playwright into the virtual environment given as $1 (default .venv).
# Idempotent and quick when both are already there. Never fails the build: whatever cannot be installed
# is reported, and the browser test then skips itself with the reason.
#
# Usage: scripts/install-browser.sh [VENV]
set -u

VENV="${1:-.venv}"
CHROMIUM=/usr/bin/chromium

say() { echo "install-browser: $*"; }

# 1. Chromium from Debian's packages.
if [ -x "$CHROMIUM" ]; then
    say "chromium already installed ($CHROMIUM)"
elif ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not available: not installing chromium (the browser test will be skipped)"
elif [ "$(id -u)" -ne 0 ]; then
    say "not root: not installing chromium (run 'apt-get install chromium' as root; the browser test will be skipped)"
else
    say "installing Debian's chromium package"
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
        say "chromium installed ($CHROMIUM)"
    else
        say "apt-get could not install chromium (the browser test will be skipped)"
    fi
fi

# 2. The playwright Python package (its driver only: browsers are never downloaded, the test uses $CHROMIUM).
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    say "no Python at $PY: not installing playwright (the browser test will be skipped)"
elif "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
    say "playwright already installed in $VENV"
elif "$PY" -m pip install --quiet --disable-pip-version-check playwright; then
    say "playwright installed in $VENV"
else
    say "pip could not install playwright (the browser test will be skipped)"
fi

exit 0
