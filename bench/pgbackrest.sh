#!/usr/bin/env bash
# The pgbackrest case's steps (run by bench/pgbackrest.py, as postgres, in BASE; see there):
# a PostgreSQL 15 primary archiving to both tools, the upload side (Barman backup + base-sync
# + wal-sync against pgbackrest backup), then REPEATS restores each way to a started server that
# replayed every segment. Prints "TIME <step> <seconds>" lines; any failed step exits non-zero.
set -euo pipefail
. "$BASE/env"
PGBIN=/usr/lib/postgresql/15/bin
B="/usr/bin/barman -c $BASE/barman.conf"
B3="$BASE/bin/barmans3 --config $BASE/barmans3.yaml"
PGBR="pgbackrest --config=$BASE/pgbackrest.conf --stanza=bench"
psql1() { "$PGBIN/psql" -h "$BASE/sock" -p "$PORT" -d postgres -Atqc "$1"; }
psql2() { "$PGBIN/psql" -h "$BASE/sock2" -p "$PORT2" -d postgres -Atqc "$1"; }
now() { date +%s.%N; }
timed() { local name=$1 t0; shift; t0=$(now); "$@"; echo "TIME $name $(awk "BEGIN { print $(now) - $t0 }")"; }
say() { echo "pgbackrest case: $*" >&2; }

say "PostgreSQL 15 primary, port $PORT, archiving to pgbackrest and Barman's incoming directory"
"$PGBIN/initdb" -D "$BASE/pgdata" -A trust -U postgres >/dev/null
cat >> "$BASE/pgdata/postgresql.conf" <<EOF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$BASE/sock'
wal_level = replica
max_wal_senders = 10
archive_mode = on
archive_command = 'false'
max_wal_size = 4GB
EOF
"$PGBIN/pg_ctl" -D "$BASE/pgdata" -l "$BASE/log/pg.log" -w start >/dev/null
# The stanza first: an archive-push before it exists would fail and hold its lock.
$PGBR stanza-create >/dev/null
psql1 "ALTER SYSTEM SET archive_command = '$PGBR archive-push %p && cp %p $BASE/barman/pg/incoming/%f'" >/dev/null
psql1 "SELECT pg_reload_conf()" >/dev/null
$PGBR check >/dev/null

say "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -h "$BASE/sock" -p "$PORT" -i -q -s "$SCALE" postgres >/dev/null 2>&1
psql1 "CHECKPOINT"
say "cluster: $(psql1 "SELECT pg_size_pretty(pg_database_size('postgres'))")"

psql1 "SELECT pg_switch_wal()" >/dev/null
$B archive-wal pg >/dev/null 2>&1 || true

say "upload side: Barman backup + base-sync + wal-sync, pgbackrest backup"
# Barman's backup is complete (DONE) once the WAL it ends in is archived and checked: switch,
# archive and check until it says so, as its cron would.
barman_backup() {
  $B backup pg >/dev/null
  local info
  for i in $(seq 1 120); do
    info=$(ls "$BASE"/barman/pg/base/*/backup.info)
    grep -q '^status=DONE' "$info" && return 0
    psql1 "SELECT pg_switch_wal()" >/dev/null
    sleep 0.5
    $B archive-wal pg >/dev/null 2>&1 || true
    $B check-backup pg "$(basename "$(dirname "$info")")" >/dev/null 2>&1 || true
  done
  echo "Barman never marked the backup DONE" >&2
  return 1
}
timed barman_backup barman_backup
ID=$(ls "$BASE/barman/pg/base")
backup_sync() { $B3 base-sync >/dev/null && $B3 wal-sync pg >/dev/null; }
timed barmans3_base_sync backup_sync
timed pgbackrest_backup $PGBR --type=full backup

say "$WALS segments of new rows, archived by both"
psql1 "CREATE TABLE fill(id int, v text); CREATE TABLE marker(done text)"
for i in $(seq 1 "$WALS"); do
  psql1 "INSERT INTO fill SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, $ROWS_PER_WAL) g" >/dev/null
  psql1 "SELECT pg_switch_wal()" >/dev/null
done
psql1 "INSERT INTO marker VALUES ('all replayed')"
LAST=$(psql1 "SELECT pg_walfile_name(pg_switch_wal())")
for i in $(seq 1 600); do
  [ "$(psql1 "SELECT last_archived_wal FROM pg_stat_archiver")" \> "$LAST" ] && break
  [ "$(psql1 "SELECT last_archived_wal FROM pg_stat_archiver")" = "$LAST" ] && break
  sleep 1
done
[ "$(psql1 "SELECT last_archived_wal FROM pg_stat_archiver")" \< "$LAST" ] && { echo "archiving never reached $LAST" >&2; exit 1; }
ROWS=$(psql1 "SELECT count(*) FROM fill")
"$PGBIN/pg_ctl" -D "$BASE/pgdata" -m fast -w stop >/dev/null
$B archive-wal pg >/dev/null
wal_sync() { $B3 wal-sync pg >/dev/null; }
timed barmans3_wal_sync wal_sync

# started DEST: starts the restored cluster (not archiving: its new timeline must not reach the
# repositories) and waits until recovery ended; the last segment's rows must be there.
started() {
  printf "archive_mode = off\nport = $PORT2\nunix_socket_directories = '$BASE/sock2'\n" >> "$1/postgresql.auto.conf"
  "$PGBIN/pg_ctl" -D "$1" -l "$BASE/log/restore.log" -w -t 3600 start >/dev/null
  for i in $(seq 1 36000); do
    [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break
    sleep 0.1
  done
  [ "$(psql2 'SELECT done FROM marker')" = "all replayed" ] || { echo "marker row missing" >&2; exit 1; }
  [ "$(psql2 'SELECT count(*) FROM fill')" = "$ROWS" ] || { echo "rows missing" >&2; exit 1; }
}
restore_barmans3() {
  mkdir -m 700 "$BASE/restore"
  $B3 base-restore --recovery pg "$ID" "$BASE/restore" >/dev/null
  started "$BASE/restore"
}
restore_pgbackrest() {
  mkdir -m 700 "$BASE/restore"
  $PGBR restore --pg1-path="$BASE/restore" >/dev/null
  started "$BASE/restore"
}
for rep in $(seq 1 "$REPEATS"); do
  order="barmans3 pgbackrest"
  [ $((rep % 2)) = 0 ] && order="pgbackrest barmans3"
  for tool in $order; do
    rm -rf "$BASE/restore" "$BASE/spool"
    mkdir -m 700 "$BASE/spool"
    timed "restore_$tool" "restore_$tool"
    "$PGBIN/pg_ctl" -D "$BASE/restore" -m immediate -w stop >/dev/null
    rm -rf "$BASE/restore"
  done
done
echo "ROWS $ROWS"
