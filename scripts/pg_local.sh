#!/usr/bin/env bash
# A throwaway PostgreSQL server for trying a shared Optuna study on one machine (and for
# tests/test_optuna_postgres.py). Not for production: trust authentication, localhost only.
#   scripts/pg_local.sh start DIR [PORT]   # prints the SQLAlchemy URL of database "optuna"
#   scripts/pg_local.sh stop DIR
# Needs Debian's `postgresql` package (initdb and pg_ctl in /usr/lib/postgresql/*/bin).
# PostgreSQL refuses to run as root: as root, the server runs as user `postgres` (or `nobody`)
# and DIR is made theirs.
set -euo pipefail
cmd=${1:?usage: $0 start|stop DIR [PORT]}
dir=${2:?usage: $0 start|stop DIR [PORT]}
port=${3:-55432}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  echo "pg_local.sh: no PostgreSQL server (apt-get install postgresql, or make ci-deps)" >&2
  exit 2
fi

as_owner=()
if [[ $(id -u) == 0 ]]; then
  user=postgres
  id -u "$user" >/dev/null 2>&1 || user=nobody
  as_owner=(runuser -u "$user" --)
fi

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ ${#as_owner[@]} -gt 0 ]]; then chown "$user" "$dir"; fi
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log"
  fi
  # the socket goes into DIR too (the default /run/postgresql needs root)
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  "${as_owner[@]}" "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qtc \
    "SELECT 1 FROM pg_database WHERE datname='optuna'" postgres | grep -q 1 ||
    "${as_owner[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres optuna
  echo "postgresql+psycopg2://postgres@127.0.0.1:$port/optuna"
  ;;
stop)
  dir=$(cd "$dir" && pwd)
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  ;;
*)
  echo "usage: $0 start|stop DIR [PORT]" >&2
  exit 2
  ;;
esac
