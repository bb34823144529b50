#!/usr/bin/env bash
# Audit writer throughput (records/s) for SQLite and PostgreSQL.
# Prerequisite for PostgreSQL: scripts/setup-radguard-audit.sh (cluster on 127.0.0.1:55432).
# Usage: bash bench/audit.sh [ASSOCIATIONS]   (default 5000 C-ECHO associations = 20,000 events)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${1:-5000}"
PG="${RADGUARD_TEST_PG:-host=127.0.0.1 port=55432 user=radguard password=radguard dbname=radguard_test}"
cargo build -q --release -p radguard-audit --example audit_bench
BIN=target/release/examples/audit_bench
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
for run in 1 2 3; do
  printf 'sqlite     run %s: ' "$run"; "$BIN" "$TMP/bench-$run.sqlite" "$N"
done
SCHEMA="bench_$$"
for run in 1 2 3; do
  printf 'postgresql run %s: ' "$run"; "$BIN" "postgresql:${PG}#schema=${SCHEMA}" "$N"
done
PGPASSWORD=radguard psql -X -q -h 127.0.0.1 -p 55432 -U radguard -d radguard_test \
  -c "DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE" >/dev/null 2>&1 || true
