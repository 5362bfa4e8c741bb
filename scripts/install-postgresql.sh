#!/bin/sh
# Install Debian's postgresql package for the tests that run several Airflow processes on one metadata
# database (tests/integration/test_triggerer.py, tests/integration/test_notifications_in_airflow.py).
# The tests start their own server in a temporary data directory on a free loopback port; the package's
# own service and cluster are not used. Debian keeps initdb and postgres in /usr/lib/postgresql/<major>/bin,
# off PATH; the tests look there. Idempotent and quick when it is already there. Never fails the build:
# without it, the tests that need PostgreSQL skip and say why.
set -u

say() { echo "install-postgresql: $*"; }

installed() {
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        if [ -x "$initdb" ]; then
            echo "$initdb"
            return 0
        fi
    done
    command -v initdb 2>/dev/null
}

if found=$(installed); then
    say "postgresql already installed ($found)"
elif ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not available: not installing postgresql (the PostgreSQL tests will be skipped)"
elif [ "$(id -u)" -ne 0 ]; then
    say "not root: not installing postgresql (run 'apt-get install postgresql' as root; the PostgreSQL tests will be skipped)"
else
    say "installing Debian's postgresql package"
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
        && found=$(installed); then
        say "postgresql installed ($found)"
    else
        say "apt-get could not install postgresql (the PostgreSQL tests will be skipped)"
    fi
fi
exit 0
