#!/usr/bin/env bash
# drill end to end on a real PostgreSQL 15, Barman (Debian's) and Garage, run by
# tests/it/drill.rs as root (the drill itself runs as postgres, the user PostgreSQL runs as):
#   - a cluster with data checksums, a backup and three batches of rows after it, each batch in
#     WAL of its own;
#   - drill with --query: exit 0, the row count of the last batch, pg_checksums --check passed,
#     a textfile and JSON, the source untouched, and nothing left behind (no DEST, no postgres,
#     no prefetcher);
#   - DEST on an 8 MiB tmpfs: refused for lack of space before anything is fetched or written,
#     exit 2;
#   - a --query that errors: exit 1 naming the step, PostgreSQL stopped, DEST removed; the
#     same (exit 1, or 130) for a --timeout shorter than the drill and for SIGTERM in replay;
#   - the last drill in `status`, `check` and the status textfile: OK after a good drill,
#     CRITICAL naming the step after a failed one;
#   - a drill killed with SIGKILL during replay leaves its PostgreSQL running; the next drill
#     stops it and removes its directory, then passes;
#   - a WAL deleted from the middle of the archive: exit 1 naming that WAL, never a success
#     "restorable up to" an earlier point; the same WAL damaged inside a record (which
#     PostgreSQL takes for the end of WAL): the drill fails naming it; nothing left behind.
# Needs BARMANS3_BIN and the BARMANS3_TEST_S3_* variables. Prints "E2E OK" at the end.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base drill

cleanup() {
  set +e
  as_barman "$B receive-wal --stop $SRV" >/dev/null 2>&1
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  mountpoint -q "$BASE/tiny" && umount "$BASE/tiny"
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout "drills prom" ""

step "PostgreSQL 15 on a socket, port $PORT"
e2e_postgres "--data-checksums" ""
e2e_config drill "  max_attempts: 3" ""

e2e_barman_server "compression = gzip\n" ""

step "rows, barman cron, backup, base-sync, wal-sync"
psql1 "CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1,1000) g;"
as_barman "$B cron" >/dev/null; sleep 3
e2e_archive_wal
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
b3 base-sync
ID=$(ls "$BASE/b3/queue" | grep '\.done$' | sed 's/\.done$//')
[ -n "$ID" ] || fail "backup not uploaded: $(ls "$BASE/b3/queue")"

step "three batches after the backup, each archived in its own WAL, wal-sync"
n=1000
for _ in 1 2 3; do
  psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($((n + 1)),$((n + 1000))) g;"
  n=$((n + 1000))
  e2e_archive_wal
done
b3 wal-sync $SRV
TOTAL=$n
WALS_BEFORE=$(b3 store ls --absolute "$SRV/wals/" | awk '{print $2}' | sort)

# The drill runs as postgres and records its result where status and check (as barman) read it.
install -d -o barman -g barman "$BASE/b3/state"
install -d -o postgres -g barman -m 2750 "$BASE/b3/state/drill"  # setgid: records readable by group barman

drill() {  # $1: DEST name; extra drill arguments after. Sets OUT (stdout), ERR (stderr), RC.
  local dest=$BASE/drills/$1; shift
  RC=0
  OUT=$(as_pg "$BIN --config $BASE/restore.yaml --json drill $SRV --dest $dest $* 2>$BASE/drills/err") || RC=$?
  ERR=$(cat "$BASE/drills/err")
  echo "$ERR" >&2
}
nothing_left() {  # $1: DEST name
  [ ! -e "$BASE/drills/$1" ] || fail "DEST $BASE/drills/$1 left behind: $(ls -la "$BASE/drills/$1")"
  ! pgrep -f -- "$BASE/drills/$1" >/dev/null || fail "a process still names $BASE/drills/$1: $(pgrep -af -- "$BASE/drills/$1")"
}

step "drill: restore, replay to the end, the right row count, nothing left behind"
drill ok --query "'SELECT count(*) FROM t'" --query "'SELECT max(id) FROM t'" --prometheus "$BASE/prom/drill.prom"
[ "$RC" = 0 ] || fail "drill failed (exit $RC)"
grep -q "barmans3 drill $SRV $ID: OK" <<<"$ERR" || fail "no OK line"
echo "$OUT" > "$BASE/report.json"
python3 - "$TOTAL" "$ID" "$BASE/report.json" <<'PY' || fail "JSON report: $OUT"
import json, sys
r = json.load(open(sys.argv[3]))
total, bid = sys.argv[1], sys.argv[2]
assert r["success"] is True and r["backup_id"] == bid, r
assert [q["first_value"] for q in r["queries"]] == [total, total], r["queries"]
assert r["segments_replayed"] >= 4, r
assert r["restorable_up_to"], r
assert r["data_checksums"] == "verified", r
assert r["amcheck"] == "passed", r
assert r["restored_bytes"] > 0 and r["bucket_bytes"] >= r["restored_bytes"], r
assert "postgres" in [d["name"] for d in r["databases"]], r["databases"]
assert r["total_seconds"] >= r["restore_seconds"] + r["replay_seconds"], r
PY
nothing_left ok
grep -q "^barmans3_drill_success{server=\"$SRV\"} 1$" "$BASE/prom/drill.prom" || fail "textfile: $(cat "$BASE/prom/drill.prom")"
grep -q "^barmans3_drill_replayed_segments{server=\"$SRV\"} " "$BASE/prom/drill.prom" || fail "no replayed segments in the textfile"
[ "$(psql1 'SELECT count(*) FROM t')" = "$TOTAL" ] || fail "the source changed"
WALS_AFTER=$(b3 store ls --absolute "$SRV/wals/" | awk '{print $2}' | sort)
[ "$WALS_BEFORE" = "$WALS_AFTER" ] || fail "the drill wrote into the archive: $(diff <(echo "$WALS_BEFORE") <(echo "$WALS_AFTER"))"

step "the good drill in status, check and the status textfile"
STATUS=$(b3 status)
grep -q "  last drill: OK .* (backup $ID, RTO " <<<"$STATUS" || fail "status: $STATUS"
CHECK=$(b3 check) || true
! grep -q "drill" <<<"$CHECK" || fail "check after a good drill: $CHECK"
b3 status --prometheus "$BASE/b3/status.prom"
grep -q "^barmans3_last_drill_success{server=\"$SRV\"} 1$" "$BASE/b3/status.prom" || fail "status textfile: $(cat "$BASE/b3/status.prom")"

step "not enough free space at DEST (an 8 MiB tmpfs): refused before the first byte, exit 2"
mkdir -p "$BASE/tiny"
mount -t tmpfs -o size=8m,mode=755 tmpfs "$BASE/tiny" || fail "could not mount a tmpfs on $BASE/tiny (the test runs as root)"
chown postgres: "$BASE/tiny"
RC=0
as_pg "$BIN --config $BASE/restore.yaml --request-log $BASE/drills/tiny.csv --request-log-format extended drill $SRV --dest $BASE/tiny/d 2>$BASE/drills/err" || RC=$?
ERR=$(cat "$BASE/drills/err"); echo "$ERR" >&2
[ "$RC" = 2 ] || fail "exit $RC with 8 MiB free, want 2"
grep -q "drill $SRV $ID: check free space: not enough free space at $BASE/tiny/d: the drill needs .* is free" <<<"$ERR" || fail "the refusal does not say why"
[ -z "$(ls -A "$BASE/tiny")" ] || fail "the refused drill wrote to DEST's file system: $(ls -lA "$BASE/tiny")"
grep -q "base/$ID/data/" "$BASE/drills/tiny.csv" && fail "backup data fetched before the refusal: $(grep -c "base/$ID/data/" "$BASE/drills/tiny.csv") requests"
umount "$BASE/tiny"

step "a --query that errors: exit 1 naming the step, PostgreSQL stopped, DEST removed"
drill badquery --query "'SELECT * FROM no_such_table'" --prometheus "$BASE/prom/drill.prom"
[ "$RC" = 1 ] || fail "exit $RC, want 1"
grep -q "FAILED at run --query: --query \"SELECT \* FROM no_such_table\"" <<<"$ERR" || fail "failure line does not name the query"
grep -q '"success": false' <<<"$OUT" || fail "JSON says success: $OUT"
nothing_left badquery
grep -q "^barmans3_drill_success{server=\"$SRV\"} 0$" "$BASE/prom/drill.prom" || fail "textfile after failure: $(cat "$BASE/prom/drill.prom")"
grep -q "^barmans3_drill_last_success_timestamp_seconds{server=\"$SRV\"} " "$BASE/prom/drill.prom" || fail "last success lost"
RC=0; CHECK=$(b3 check) || RC=$?
[ "$RC" = 2 ] || fail "check after a failed drill: exit $RC, want 2: $CHECK"
grep -q "$SRV: the last drill (.*backup $ID) FAILED at run --query: .*; last good drill .* ago" <<<"$CHECK" || fail "check: $CHECK"
b3 status --prometheus "$BASE/b3/status.prom"
grep -q "^barmans3_last_drill_success{server=\"$SRV\"} 0$" "$BASE/b3/status.prom" || fail "status textfile: $(cat "$BASE/b3/status.prom")"

step "--timeout shorter than the drill: exit 1 naming it, nothing left behind"
drill timeout --timeout 1s
[ "$RC" = 1 ] || fail "exit $RC with --timeout 1s, want 1"
grep -q "did not finish within --timeout 1s" <<<"$ERR" || fail "failure does not name the timeout"
nothing_left timeout

step "SIGTERM during replay: exit 130, PostgreSQL stopped, DEST removed"
as_pg "$BIN --config $BASE/restore.yaml drill $SRV --dest $BASE/drills/term 2>$BASE/drills/err" &
SU_PID=$!
for _ in $(seq 1 600); do grep -q "drill: replay the WAL" "$BASE/drills/err" 2>/dev/null && break; sleep 0.1; done
grep -q "drill: replay the WAL" "$BASE/drills/err" || fail "the drill never reached replay: $(cat "$BASE/drills/err")"
DRILL_PID=$(pgrep -u postgres -f -- "^$BIN --config $BASE/restore.yaml drill $SRV --dest $BASE/drills/term")
[ -n "$DRILL_PID" ] || fail "no drill process"
kill -TERM "$DRILL_PID"
RC=0; wait "$SU_PID" || RC=$?
[ "$RC" = 130 ] || fail "exit $RC after SIGTERM, want 130: $(cat "$BASE/drills/err")"
nothing_left term

step "SIGKILL during replay: PostgreSQL outlives the drill; the next drill stops it, removes its DEST, passes"
as_pg "$BIN --config $BASE/restore.yaml drill $SRV --dest $BASE/drills/killed 2>$BASE/drills/err" &
SU_PID=$!
for _ in $(seq 1 600); do pgrep -u postgres -f -- "-D $BASE/drills/killed/data" >/dev/null && break; sleep 0.1; done
DRILL_PID=$(pgrep -u postgres -f -- "^$BIN --config $BASE/restore.yaml drill $SRV --dest $BASE/drills/killed")
[ -n "$DRILL_PID" ] || fail "no drill process"
pgrep -u postgres -f -- "-D $BASE/drills/killed/data" >/dev/null || fail "the drill never started PostgreSQL: $(cat "$BASE/drills/err")"
kill -KILL "$DRILL_PID"
wait "$SU_PID" || true
pgrep -u postgres -f -- "-D $BASE/drills/killed/data" >/dev/null || fail "PostgreSQL did not outlive the killed drill (the case is not exercised)"
[ -e "$BASE/drills/killed/.barmans3-drill" ] || fail "the killed drill left no marker"
drill after-kill --no-amcheck
[ "$RC" = 0 ] || fail "the drill after a killed one failed (exit $RC)"
grep -q "removed $BASE/drills/killed that a killed drill left (its PostgreSQL, pid [0-9]*, stopped)" <<<"$ERR" || fail "no word of the killed drill's leftovers"
grep -q '"amcheck": "skipped"' <<<"$OUT" || fail "--no-amcheck: $OUT"
nothing_left killed
nothing_left after-kill

step "a WAL deleted from the middle of the archive: the drill fails naming it"
SEGS=$(grep -E '/[0-9A-F]{24}$' <<<"$WALS_BEFORE")
MIDDLE=$(tail -2 <<<"$SEGS" | head -1)
NAME=${MIDDLE##*/}
b3 store get "${MIDDLE#"$PREFIX/"}" "$BASE/b3/kept.wal"
curl -sS -f --aws-sigv4 "aws:amz:garage:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --user "$BARMANS3_TEST_S3_ACCESS_KEY_ID:$BARMANS3_TEST_S3_SECRET_ACCESS_KEY" \
  -X DELETE "$BARMANS3_TEST_S3_ENDPOINT/$BARMANS3_TEST_S3_BUCKET/$MIDDLE" || fail "could not delete $MIDDLE"
grep -qE "/$NAME$" <<<"$(b3 store ls "$SRV/wals/")" && fail "$NAME still listed"
drill gap --query "'SELECT count(*) FROM t'"
[ "$RC" = 1 ] || fail "exit $RC with $NAME missing, want 1"
grep -q "FAILED at .*$NAME" <<<"$ERR" || fail "failure does not name $NAME"
grep -q '"success": false' <<<"$OUT" || fail "JSON says success: $OUT"
nothing_left gap

step "the WAL back, but damaged inside a record (its first page intact): PostgreSQL would end recovery there and promote; the drill fails naming it"
python3 - "$BASE/b3/kept.wal" "$BASE/b3/damaged.wal" <<'PY'
import gzip, sys
raw = open(sys.argv[1], "rb").read()
seg = bytearray(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
assert len(seg) == 16 << 20, len(seg)
for i in range(20000, 20064):
    seg[i] ^= 0xFF
open(sys.argv[2], "wb").write(bytes(seg))
PY
chown barman: "$BASE/b3/damaged.wal"
b3 store put "$BASE/b3/damaged.wal" "${MIDDLE#"$PREFIX/"}"
drill damaged --query "'SELECT count(*) FROM t'"
[ "$RC" = 1 ] || fail "exit $RC with $NAME damaged, want 1"
grep -q "FAILED at check the end of the archive: replay ended in WAL $NAME" <<<"$ERR" || fail "failure does not name $NAME"
grep -q '"success": false' <<<"$OUT" || fail "JSON says success: $OUT"
nothing_left damaged

echo "E2E OK: drill of $ID ($TOTAL rows), status and check, a failing --query, a timeout, SIGTERM, SIGKILL, $NAME deleted then damaged; prefix $PREFIX" >&2
