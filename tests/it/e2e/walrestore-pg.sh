#!/usr/bin/env bash
# wal-restore on a real PostgreSQL 15 and the run's Garage, run by tests/it/walrestore_pg.rs as
# root. PostgreSQL archives its WAL into a directory, the script ships it to the bucket with
# `store put` (the layout wal-sync writes), pg_basebackup makes the base backup, and each
# restored copy replays from the bucket through `wal-restore` with prefetch:
#   - a closed .partial with later segments of its timeline behind it: recovery stops, it never
#     promotes with half the rows; with the whole segment shipped the same directory recovers
#     every row;
#   - after a pg_upgrade the bucket's identity.json names another cluster: the backup's own
#     WAL still restores (checked against the data directory's pg_control);
#   - a standby fed from the archive, caught up and waiting: its prefetcher stays alive at
#     under 5 % of a core, keeps one marker per kind in its spool, follows new WAL, and ends
#     at once on SIGTERM.
# Needs BARMANS3_BIN and the BARMANS3_TEST_S3_* variables. WALRESTORE_PG_STEPS picks some of
# the three cases ("partial upgrade standby", the default: all) to see each alone against
# another binary. Prints "E2E OK" at the end; a
# failed step exits non-zero with its name.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
. "$(dirname "$0")/lib.sh"
e2e_base walrestore

cleanup() {
  set +e
  for d in "$BASE"/r*; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1
  done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  # This run's prefetchers (they would end on their own once nobody asks).
  pkill -f "wal-prefetch pg --spool $BASE/" >/dev/null 2>&1
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout "archive pgstate backup" ""
step "PostgreSQL 15 archiving into a directory"
e2e_postgres "" "archive_mode = on\narchive_command = 'cp %p $BASE/archive/%f'\n"
e2e_config walrestore "" ""
# The restore side runs as postgres, with state of its own.
sed -i "s#$BASE/b3/state#$BASE/pgstate#; s#$BASE/b3/queue#$BASE/pgstate/queue#" "$BASE/restore.yaml"
RCFG=$BASE/restore.yaml
mkdir -p "$BASE/shipped"

# ship: uploads every archived file not shipped yet, except the names in $SKIP.
ship() {
  local f n key
  for f in "$BASE"/archive/*; do
    n=$(basename "$f")
    [ -e "$BASE/shipped/$n" ] && continue
    case " ${SKIP:-} " in *" $n "*) continue ;; esac
    case "$n" in *.history) key=pg/wals/$n ;; *) key=pg/wals/${n:0:16}/$n ;; esac
    as_pg "$BIN -q --config $RCFG store put $f $key" >/dev/null
    touch "$BASE/shipped/$n"
  done
}
# archived NAME: waits until PostgreSQL has archived NAME.
archived() {
  for _ in $(seq 1 60); do [ -f "$BASE/archive/$1" ] && return 0; sleep 1; done
  fail "$1 was not archived"
}
switch() {  # closes the current segment; prints its name
  local n
  n=$(psql1 "SELECT pg_walfile_name(pg_current_wal_lsn())")
  psql1 "SELECT pg_switch_wal()" >/dev/null
  archived "$n"
  echo "$n"
}
rows() { psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($1,$2) g"; }

step "base backup, then rows 1-3000, rows 3001-6000 in segment N, two more segments"
psql1 "CREATE TABLE t(id int, v text)"
as_pg "$PGBIN/pg_basebackup -h $BASE/sock -p $PORT -U postgres -D $BASE/backup -X none -c fast"
rows 1 3000
switch >/dev/null
rows 3001 6000
N=$(switch)
psql1 "CREATE TABLE u1(id int)"
switch >/dev/null
psql1 "CREATE TABLE u2(id int)"
LAST=$(switch)
# Segment N reaches the bucket only as a closed partial: its first 64 KiB (part of the
# second batch, not its commit), zero-padded to the segment size as pg_receivewal writes it.
cp "$BASE/archive/$N" "$BASE/partial"
truncate -s 65536 "$BASE/partial"; truncate -s "$(stat -c %s "$BASE/archive/$N")" "$BASE/partial"
chown postgres: "$BASE/partial"
as_pg "$BIN -q --config $RCFG store put $BASE/partial pg/wals/${N:0:16}/$N.partial" >/dev/null
SKIP=$N ship

want() { case " ${WALRESTORE_PG_STEPS:-partial upgrade standby} " in *" $1 "*) return 0 ;; esac; return 1; }

recover_into() {  # $1: dir, $2: recovery or standby
  rm -rf "$1"; cp -a "$BASE/backup" "$1"; chmod 700 "$1"
  touch "$1/$2.signal"; chown postgres: "$1/$2.signal"
  printf "restore_command = '%s --config %s wal-restore pg %%f %%p'\narchive_mode = off\n" "$BIN" "$RCFG" >> "$1/postgresql.auto.conf"
}
start2() { as_pg "$PGBIN/pg_ctl -D $1 -l $BASE/pglog/$(basename "$1").log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null"; }
stop2() { as_pg "$PGBIN/pg_ctl -D $1 -m fast -w stop >/dev/null"; }
promoted() {
  for _ in $(seq 1 60); do
    [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && return 0; sleep 1
  done
  return 1
}
count() { psql2 "SELECT count(*) FROM t" 2>/dev/null || true; }
refused() {  # $1: data dir. PostgreSQL stopped in archive recovery, on the original timeline.
  local log
  log=$BASE/pglog/$(basename "$1").log
  for _ in $(seq 1 90); do [ -f "$1/postmaster.pid" ] || break; sleep 1; done
  [ ! -f "$1/postmaster.pid" ] || fail "PostgreSQL still running in $1 (promoted with $(count) rows?)"
  grep -q "could not restore file \"$N\"" "$log" || fail "no restore failure for $N in the log: $(tail -5 "$log")"
  ! grep -q "selected new timeline" "$log" || fail "a new timeline was selected"
  [ -f "$1/recovery.signal" ] || fail "recovery.signal is gone: recovery ended"
}

if want partial; then
  step "the partial of $N with later segments up to $LAST behind it: recovery stops, no promotion"
  recover_into "$BASE/r1" recovery
  start2 "$BASE/r1" || true
  refused "$BASE/r1"
  grep -q "only its closed partial" "$BASE/pglog/r1.log" || fail "no reason in the log: $(tail -5 "$BASE/pglog/r1.log")"
fi
step "the whole segment shipped"
ship
if want partial; then
  step "the same directory now recovers every row"
  start2 "$BASE/r1" || fail "r1 did not start: $(tail -5 "$BASE/pglog/r1.log")"
  promoted || fail "r1 did not finish recovery: $(tail -5 "$BASE/pglog/r1.log")"
  [ "$(count)" = 6000 ] || fail "r1 has $(count) rows, want 6000"
  stop2 "$BASE/r1"
fi

if want upgrade; then
step "after a pg_upgrade the bucket names another cluster: the backup's WAL still restores"
SYSID=$("$PGBIN/pg_controldata" "$BASE/pgdata" | awk -F': *' '/system identifier/ {print $2}')
printf '{"systemid": "%s", "version": "16.4"}\n' "$((SYSID + 1))" > "$BASE/identity.json"
chown postgres: "$BASE/identity.json"
as_pg "$BIN -q --config $RCFG store put $BASE/identity.json pg/identity.json" >/dev/null
recover_into "$BASE/r2" recovery
start2 "$BASE/r2" || fail "r2 did not start: $(tail -5 "$BASE/pglog/r2.log")"
promoted || fail "r2 did not finish recovery: $(tail -5 "$BASE/pglog/r2.log")"
[ "$(count)" = 6000 ] || fail "r2 has $(count) rows, want 6000"
stop2 "$BASE/r2"
fi

T0=0; T1=0
if want standby; then

step "a standby fed from the archive catches up and waits"
recover_into "$BASE/r3" standby
start2 "$BASE/r3" || fail "r3 did not start: $(tail -5 "$BASE/pglog/r3.log")"
wait_rows() {
  for _ in $(seq 1 90); do [ "$(count)" = "$1" ] && return 0; sleep 1; done
  fail "the standby has $(count) rows, want $1: $(tail -5 "$BASE/pglog/r3.log")"
}
wait_rows 6000
prefetcher() { pgrep -f "wal-prefetch pg --spool $BASE/r3/" | head -1; }
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Let it ask for the next (absent) segment a few times.
sleep 12
PID=$(prefetcher)
[ -n "$PID" ] || fail "no prefetcher alive while the standby asks every 5 s"
T0=$(cpu_ticks "$PID"); sleep 10
alive "$PID" || fail "the prefetcher exited while the standby kept asking"
T1=$(cpu_ticks "$PID"); HZ=$(getconf CLK_TCK)
step "prefetcher CPU while the standby waited: $((T1 - T0)) of $((10 * HZ)) ticks in 10 s"
[ $((T1 - T0)) -lt $((HZ / 2)) ] || fail "the prefetcher used $((T1 - T0)) ticks of CPU in 10 s (limit $((HZ / 2)): 5 %) while nothing was in flight"
SPOOL=$(tr '\0' '\n' < "/proc/$PID/cmdline" | tail -1)
for n in $(ls -A "$SPOOL"); do
  case "$n" in
    .want | .missing | .cluster | .prefetch.lock | .prefetch.log) ;;
    [0-9A-F]*.[0-9a-f]*) [ ${#n} = 33 ] || fail "unexpected $n in the spool" ;;
    *) fail "unexpected $n in the spool (markers must not pile up)" ;;
  esac
done

step "new WAL reaches the standby through the spool"
rows 6001 7000
switch >/dev/null
ship
wait_rows 7000

step "SIGTERM ends the prefetcher at once"
PID=$(prefetcher)
[ -n "$PID" ] || fail "no prefetcher alive after new WAL"
kill -TERM "$PID"
for _ in $(seq 1 50); do alive "$PID" || break; sleep 0.1; done
! alive "$PID" || fail "the prefetcher ignored SIGTERM"
ls "$SPOOL"/.fetch-* >/dev/null 2>&1 && fail "a stopped prefetcher left files being fetched"
stop2 "$BASE/r3"
fi

echo "E2E OK: partial before $LAST refused and recovered after the fix, WAL of an upgraded cluster, standby prefetcher $((T1 - T0)) ticks in 10 s, prefix $PREFIX" >&2
