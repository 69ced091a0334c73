#!/bin/bash
# ClickHouse server init (runs once, on an empty data directory, from /docker-entrypoint-initdb.d):
# applies mlvigil's DDL (sql/clickhouse/*.sql, mounted at MLVIGIL_SQL_DIR, default /mlvigil/sql,
# in order, {db} = MLVIGIL_DATABASE) and creates a read-only user for Grafana when
# MLVIGIL_GRAFANA_PASSWORD is set. The job applies the same DDL at each start (IF NOT EXISTS).
set -euo pipefail
db=${MLVIGIL_DATABASE:-mlvigil}
client=(clickhouse-client --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" --multiquery)
for f in "${MLVIGIL_SQL_DIR:-/mlvigil/sql}"/*.sql; do
  echo "mlvigil: applying $(basename "$f") to database $db"
  sed "s/{db}/$db/g" "$f" | "${client[@]}"
done
if [ -n "${MLVIGIL_GRAFANA_PASSWORD:-}" ]; then
  # readonly = 2: no writes, but the datasource may still set per-query settings
  "${client[@]}" <<SQL
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${MLVIGIL_GRAFANA_PASSWORD}' SETTINGS readonly = 2;
GRANT SELECT ON $db.* TO grafana;
SQL
fi
