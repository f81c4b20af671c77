#!/usr/bin/env bash
# The scale-out topology from local processes (for tests and trials): PostgreSQL on this machine,
# an MLflow tracking server on PostgreSQL, and two `attest serve` replicas sharing one log
# database and one server key.
#
#   deploy/local-topology.sh start [DIR]   start everything; prints URLs and tokens (DIR/env)
#   deploy/local-topology.sh stop  [DIR]   stop the processes it started and drop its databases
#
# Environment: PGURL (default postgresql://postgres@127.0.0.1:5432/postgres, trust auth),
# PYTHON (default .venv/bin/python), ATTEST_PORTS (default "8081 8082"), MLFLOW_PORT (5500).
set -euo pipefail

cmd=${1:-start}
dir=$(realpath -m "${2:-./attest-topology}")
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
pgurl=${PGURL:-postgresql://postgres@127.0.0.1:5432/postgres}
ports=${ATTEST_PORTS:-"8081 8082"}
mlflow_port=${MLFLOW_PORT:-5500}
pg_base=${pgurl%/*}

psql_do() { "$python" -c 'import sys, psycopg; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])' "$pgurl" "$1"; }

wait_http() {
  for _ in $(seq 1 150); do
    if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.4
  done
  echo "error: $1 did not come up; see the logs in $dir" >&2
  return 1
}

case "$cmd" in
start)
  mkdir -p "$dir"
  suffix=$(basename "$dir" | tr -c 'a-zA-Z0-9\n' '_')
  log_db="attest_${suffix}"
  mlflow_db="mlflow_${suffix}"
  psql_do "CREATE DATABASE \"$log_db\"" 2>/dev/null || true
  psql_do "CREATE DATABASE \"$mlflow_db\"" 2>/dev/null || true
  echo "$log_db $mlflow_db" > "$dir/databases"
  log_url="${pg_base/postgresql:/postgresql+psycopg:}/$log_db"
  mlflow_url="${pg_base/postgresql:/postgresql+psycopg:}/$mlflow_db"
  [ -f "$dir/server.key" ] || "$python" -c '
import sys
from cryptography.hazmat.primitives.asymmetric import ed25519
from attest.keys import save_server_key
save_server_key(ed25519.Ed25519PrivateKey.generate(), sys.argv[1])' "$dir/server.key"

  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nohup "$python" -m mlflow server \
    --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
    --backend-store-uri "$mlflow_url" --artifacts-destination "$dir/mlartifacts" \
    > "$dir/mlflow.log" 2>&1 &
  echo $! > "$dir/mlflow.pid"
  wait_http "http://127.0.0.1:$mlflow_port/health"

  attest() { "$python" -c 'from attest.cli import main; main()' "$@"; }
  admin=$(attest token create --role admin --name admin --database-url "$log_url" --data "$dir/cli")
  trainer=$(attest token create --role trainer --name trainer --database-url "$log_url" --data "$dir/cli")
  i=0
  urls=""
  for port in $ports; do
    i=$((i + 1))
    setsid nohup "$python" -c 'from attest.cli import main; main()' serve --host 127.0.0.1 --port "$port" \
      --database-url "$log_url" --server-key "$dir/server.key" --data "$dir/replica$i" \
      --mlflow-tracking-uri "http://127.0.0.1:$mlflow_port" > "$dir/attest$i.log" 2>&1 &
    echo $! > "$dir/attest$i.pid"
    # the first replica creates the schema; the next ones start after it is ready
    wait_http "http://127.0.0.1:$port/readyz"
    urls="$urls http://127.0.0.1:$port"
  done
  cat > "$dir/env" <<ENV
ATTEST_URLS="${urls# }"
MLFLOW_URL=http://127.0.0.1:$mlflow_port
ATTEST_ADMIN_TOKEN=$admin
ATTEST_TOKEN=$trainer
ATTEST_DATABASE_URL=$log_url
ENV
  echo "started: attest replicas${urls}, MLflow http://127.0.0.1:$mlflow_port"
  echo "tokens and URLs: $dir/env (source it)"
  ;;
stop)
  for pidfile in "$dir"/attest*.pid "$dir"/mlflow.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # each process was started as its own session: stop its whole group (mlflow's workers too)
    kill -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  if [ -f "$dir/databases" ]; then
    for db in $(cat "$dir/databases"); do psql_do "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
    rm -f "$dir/databases"
  fi
  echo "stopped"
  ;;
*)
  echo "usage: $0 start|stop [DIR]" >&2
  exit 2
  ;;
esac
