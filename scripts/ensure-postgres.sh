#!/usr/bin/env bash
# The sweep's concurrency test runs workers against a real PostgreSQL server, which the test starts on
# 127.0.0.1 itself; this only makes sure the server binaries are installed (Debian/Ubuntu, as root).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing PostgreSQL (for the sweep's concurrency test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # Debian starts a cluster of its own on install; the tests start their own on a free port.
  (command -v pg_ctlcluster >/dev/null && pg_ctlcluster --help >/dev/null 2>&1 && service postgresql stop) >/dev/null 2>&1 || true
else
  echo "PostgreSQL is not installed and this user cannot apt-get it: the PostgreSQL test will be skipped" >&2
fi
