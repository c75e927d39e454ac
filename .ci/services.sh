#!/usr/bin/env bash
# Services the integration tests need on a fresh Debian machine, without Docker. The tests start
# and stop their own throwaway PostgreSQL cluster (cv_assets_tests/integration/pg.py), so only the
# binaries are installed here; moto (the S3 server) and MLflow come with the project's dev extras.
# Idempotent and quiet: a machine that already has them is left as it is.
set -euo pipefail

have_postgres() {
  command -v pg_ctl >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}

if ! have_postgres; then
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "services.sh: PostgreSQL is missing and this user cannot install it (no root, no sudo)" >&2; exit 1; }
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  # No "main" cluster on 5432: the tests bring their own. (A pre-existing file is kept.)
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    "${SUDO[@]}" mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  echo "services.sh: installing PostgreSQL (apt-get)"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold postgresql >/dev/null
fi
have_postgres || { echo "services.sh: PostgreSQL binaries still missing after install" >&2; exit 1; }
echo "services.sh: PostgreSQL $(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1) binaries present"
