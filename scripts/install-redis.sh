#!/bin/sh
# Install Debian's redis-server package for the shared-budget tests (tests/integration/test_shared_budget.py).
# The tests start their own server on a free loopback port; the package's own service is not used.
# Idempotent and quick when it is already there. Never fails the build: without it, the tests that need
# Redis skip and say why.
set -u

say() { echo "install-redis: $*"; }

if command -v redis-server >/dev/null 2>&1; then
    say "redis-server already installed ($(command -v redis-server))"
elif ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not available: not installing redis-server (the Redis tests will be skipped)"
elif [ "$(id -u)" -ne 0 ]; then
    say "not root: not installing redis-server (run 'apt-get install redis-server' as root; the Redis tests will be skipped)"
else
    say "installing Debian's redis-server package"
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; then
        say "redis-server installed ($(command -v redis-server))"
    else
        say "apt-get could not install redis-server (the Redis tests will be skipped)"
    fi
fi
exit 0
