#!/usr/bin/env bash
# A bucket written by Barman's own cloud tools (3.20 from PyPI: barman-cloud-backup and, as
# archive_command, barman-cloud-wal-archive) for a real PostgreSQL 15, read by barmans3
# --layout barman-cloud. Run by tests/it/barman_cloud.rs as root:
#   - WALs gzip, then snappy (archive_command switched), a restore point between batches;
#   - B1 a gzip backup with a tablespace, B2 a snappy one split into parts (--max-archive-size);
#   - base-ls lists both; base-restore B2 replays to the end of the archive (segments from the
#     prefetch spool) and B2 restored by barman-cloud-restore is the same data directory; B1
#     replays to the restore point, is promoted and archives timeline 2 into the bucket; B1
#     restored again follows the (compressed) history file onto timeline 2; PostgreSQL starts
#     with the right rows each time;
#   - drill --layout barman-cloud of B2: exit 0, the right rows, recorded; status and the
#     status textfile show the drill of this server Barman's configuration does not name, and
#     the backups the bucket holds for it (2, the newest DONE one B2);
#   - hostile rows (a server of their own in the same bucket): a tar member outside DEST, a
#     truncated archive, a WAL of another segment under a segment's name: refused, not exit 0,
#     nothing written outside DEST.
# Needs BARMANS3_BIN, BARMAN_VENV and the BARMANS3_TEST_S3_* variables. Prints "E2E OK" at the
# end; a failed step exits non-zero with its name.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base cloud

cleanup() {
  set +e
  for d in "$BASE"/restore*; do [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1; done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout "tbs bc" ""
echo "[barman]" > "$BASE/barman.conf"; chown barman: "$BASE/barman.conf"
e2e_config cloud "" ""
URL="s3://$BARMANS3_TEST_S3_BUCKET/$PREFIX"
# barman-cloud's own credentials, in a file only postgres reads (archive_command sources it).
cat > "$BASE/bc/env" <<EOF
export AWS_ACCESS_KEY_ID=$BARMANS3_TEST_S3_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$BARMANS3_TEST_S3_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=garage
EOF
chown postgres: "$BASE/bc" "$BASE/bc/env"; chmod 600 "$BASE/bc/env"
BC="$BARMAN_VENV/bin"
EP="--endpoint-url $BARMANS3_TEST_S3_ENDPOINT"
bc() { as_pg ". $BASE/bc/env && $BC/$*"; }
archive_with() {  # $1: barman-cloud-wal-archive's compression flag
  psql1 "ALTER SYSTEM SET archive_command = '. $BASE/bc/env && $BC/barman-cloud-wal-archive $EP $1 $URL $SRV %p'"
  psql1 "SELECT pg_reload_conf()" >/dev/null
}
VERSION=$(as_pg "$BC/barman-cloud-backup --version" 2>&1 | head -1)
step "barman-cloud: $VERSION"

step "PostgreSQL 15 archiving with barman-cloud-wal-archive --gzip"
e2e_postgres "" "archive_mode = on\narchive_command = '/bin/false'\n"
archive_with --gzip
switch() {  # a WAL switch, waited for until archived
  local before after
  before=$(psql1 "SELECT archived_count FROM pg_stat_archiver")
  psql1 "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 60); do
    after=$(psql1 "SELECT archived_count FROM pg_stat_archiver")
    [ "$after" -gt "$before" ] && return 0; sleep 1
  done
  fail "WAL not archived: $(psql1 'SELECT * FROM pg_stat_archiver')"
}
rows() { psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($1,$2) g; INSERT INTO ts SELECT generate_series($1,$2);"; }
psql1 "CREATE TABLESPACE t1 LOCATION '$BASE/tbs'"
psql1 "CREATE TABLE t(id int, v text); CREATE TABLE ts(id int) TABLESPACE t1;"
rows 1 1000
switch

step "B1: barman-cloud-backup --gzip (with the tablespace)"
bc "barman-cloud-backup $EP --gzip -h $BASE/sock -p $PORT -U postgres --immediate-checkpoint $URL $SRV"
rows 1001 2000
switch
step "WALs snappy from here; a restore point between two batches"
archive_with --snappy
rows 2001 3000
psql1 "SELECT pg_create_restore_point('rp')" >/dev/null
rows 3001 4000
switch
step "B2: barman-cloud-backup --snappy, parts of at most 1 MB"
bc "barman-cloud-backup $EP --snappy --max-archive-size 1MB -h $BASE/sock -p $PORT -U postgres --immediate-checkpoint $URL $SRV"
rows 4001 5000
switch
TOTAL=5000

step "base-ls --layout barman-cloud"
LS=$(b3 base-ls --layout barman-cloud $SRV)
echo "$LS" >&2
ID1=$(awk 'NR==2 {print $1}' <<<"$LS"); ID2=$(awk 'NR==3 {print $1}' <<<"$LS")
[ -n "$ID1" ] && [ -n "$ID2" ] || fail "two backups not listed: $LS"
grep -qE "^$ID1 +DONE .* gzip +1 +yes$" <<<"$LS" || fail "B1 not listed as a complete gzip backup with a tablespace: $LS"
grep -qE "^$ID2 +DONE .* snappy +1 +yes$" <<<"$LS" || fail "B2 not listed as a complete snappy backup: $LS"
OBJECTS=$(b3 store ls "$SRV/base/$ID2/")
grep -q "data_0001.tar.snappy" <<<"$OBJECTS" || fail "B2 is not split into parts: $OBJECTS"
WALS=$(b3 store ls "$SRV/wals/")
grep -qE '[0-9A-F]{24}\.gz' <<<"$WALS" && grep -qE '[0-9A-F]{24}\.snappy' <<<"$WALS" || fail "WALs not in two compressions: $WALS"

step "verify --layout barman-cloud: every archive read back, the WAL chains there"
VER=$(b3 verify --layout barman-cloud $SRV 2>&1) || fail "verify: $VER"
grep -q "no problem found" <<<"$VER" || fail "verify: $VER"

restore() {  # $1: dir, $2: backup id; extra args after
  local dir=$1 id=$2; shift 2
  rm -rf "$dir" "${dir}_tblspc"; mkdir -p "$dir"; chown postgres: "$dir"; chmod 700 "$dir"
  mkdir -p "${dir}_tblspc"; chown postgres: "${dir}_tblspc"
  as_pg "$BIN --config $BASE/restore.yaml base-restore --layout barman-cloud $* $SRV $id $dir"
}
start2() {  # $1: data dir; $2: "keep" to keep archiving (with barman-cloud-wal-archive)
  # Otherwise the copy must not archive into the source's bucket.
  if [ "${2:-}" = keep ]; then
    # base-restore --recovery turned archiving off; this copy archives on purpose.
    printf "archive_mode = on\narchive_command = '. $BASE/bc/env && $BC/barman-cloud-wal-archive $EP --snappy $URL $SRV %%p'\n" >> "$1/postgresql.auto.conf"
  else
    printf "archive_mode = off\n" >> "$1/postgresql.auto.conf"
  fi
  as_pg "$PGBIN/pg_ctl -D $1 -l $BASE/pglog/$(basename "$1").log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null"
}
promoted() {
  for _ in $(seq 1 90); do
    [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && return 0; sleep 1
  done
  return 1
}
# A copy that archives finishes archiving before it stops: barman-cloud-wal-archive starts
# Python per WAL, slow on a loaded machine.
stop2() { as_pg "$PGBIN/pg_ctl -D $1 -m fast -w -t 300 stop >/dev/null"; }
count_ok() {
  [ "$(psql2 'SELECT count(*), max(id) FROM t')" = "$1|$1" ] || fail "rows in t: $(psql2 'SELECT count(*), max(id) FROM t'), want $1"
  [ "$(psql2 'SELECT count(*) FROM ts')" = "$1" ] || fail "rows in ts: $(psql2 'SELECT count(*) FROM ts'), want $1"
}

step "B2 (snappy, in parts) restored, barman-cloud-restore's copy identical, replayed to the end"
restore "$BASE/restore2" "$ID2"
OID=$(ls "$BASE/restore2/pg_tblspc")
[ "$(readlink "$BASE/restore2/pg_tblspc/$OID")" = "$BASE/restore2_tblspc/$OID" ] || fail "tablespace link not made to its new home"
mkdir -p "$BASE/restore_bc" "$BASE/restore_bc_tbs"; chown postgres: "$BASE/restore_bc" "$BASE/restore_bc_tbs"
bc "barman-cloud-restore $EP --tablespace t1:$BASE/restore_bc_tbs $URL $SRV $ID2 $BASE/restore_bc"
DIFF=$(diff -r --no-dereference -x pg_tblspc "$BASE/restore2" "$BASE/restore_bc" 2>&1) || fail "data directories differ: $DIFF"
DIFF=$(diff -r "$BASE/restore2_tblspc/$OID" "$BASE/restore_bc_tbs" 2>&1) || fail "tablespaces differ: $DIFF"
rm -rf "$BASE/restore2" "$BASE/restore2_tblspc"
restore "$BASE/restore2" "$ID2" --recovery --recovery-config "$BASE/restore.yaml"
start2 "$BASE/restore2" || fail "B2 did not start: $(tail -5 "$BASE/pglog/restore2.log")"
promoted || fail "B2 recovery did not finish: $(tail -5 "$BASE/pglog/restore2.log")"
count_ok "$TOTAL"
# The prefetcher ran on this layout and fetched without a failure.
PLOG=$(ls "$BASE"/restore2/pg_wal/.barmans3-spool/*/.prefetch.log 2>/dev/null | head -1)
[ -n "$PLOG" ] || fail "no prefetcher ran: $(ls -a "$BASE/restore2/pg_wal")"
! grep -qE "trying again later|not fetching it again|listing the WAL archive|timeline history" "$PLOG" || fail "prefetch failures: $(tail -5 "$PLOG")"
echo "prefetcher: $(tail -2 "$PLOG")" >&2
stop2 "$BASE/restore2"

step "drill --layout barman-cloud: B2 restored, replayed to the end, checked, recorded, removed"
# The drill runs as postgres and records its result where status (as barman) reads it.
install -d -o barman -g barman "$BASE/b3/state"
install -d -o postgres -g barman -m 2750 "$BASE/b3/state/drill"
install -d -o postgres -g postgres "$BASE/drills"
RC=0
OUT=$(as_pg "$BIN --config $BASE/restore.yaml --json drill --layout barman-cloud $SRV --dest $BASE/drills/d1 --query 'SELECT count(*) FROM t' --query 'SELECT count(*) FROM ts' 2>$BASE/drills/err") || RC=$?
cat "$BASE/drills/err" >&2
[ "$RC" = 0 ] || fail "drill --layout barman-cloud: exit $RC: $(tail -3 "$BASE/drills/err")"
echo "$OUT" > "$BASE/drills/report.json"
python3 - "$TOTAL" "$ID2" "$BASE/drills/report.json" <<'PY' || fail "drill report: $OUT"
import json, sys
r = json.load(open(sys.argv[3]))
total, bid = sys.argv[1], sys.argv[2]
assert r["success"] is True and r["backup_id"] == bid and r["layout"] == "barman-cloud", r
assert [q["first_value"] for q in r["queries"]] == [total, total], r["queries"]
assert r["segments_replayed"] >= 2 and r["bucket_bytes"] > 0, r
PY
[ ! -e "$BASE/drills/d1" ] || fail "the drill left $BASE/drills/d1"
ST=$(b3 status)
grep -q "^server $SRV (barman-cloud bucket, not in Barman's configuration):" <<<"$ST" || fail "status lacks the drilled server: $ST"
grep -qE "^  last drill: OK .*backup $ID2" <<<"$ST" || fail "status lacks the drill: $ST"
grep -qE "^  backups in the bucket: 2; newest DONE $ID2, ended [0-9]+[hm] ago$" <<<"$ST" || fail "status lacks the bucket's backups: $ST"
b3 status --prometheus "$BASE/b3/status.prom"
grep -q "^barmans3_last_drill_success{server=\"$SRV\"} 1$" "$BASE/b3/status.prom" || fail "metrics lack the drill: $(grep drill "$BASE/b3/status.prom")"
grep -q "^barmans3_cloud_backups{server=\"$SRV\"} 2$" "$BASE/b3/status.prom" || fail "metrics lack the bucket's backups: $(grep cloud "$BASE/b3/status.prom")"
END2=$(grep -oE "^barmans3_cloud_newest_backup_end_timestamp_seconds\{server=\"$SRV\"\} [0-9]+$" "$BASE/b3/status.prom" | awk '{print $2}') || fail "metrics lack the newest backup's end: $(grep cloud "$BASE/b3/status.prom")"
[ $(( $(date +%s) - END2 )) -ge 0 ] && [ $(( $(date +%s) - END2 )) -lt 7200 ] || fail "the newest backup's end ($END2) is not within the last two hours"

step "B1 (gzip, tablespace) restored and replayed to the restore point; timeline 2 archived"
restore "$BASE/restore1" "$ID1" --recovery --recovery-config "$BASE/restore.yaml"
[ "$(readlink "$BASE/restore1/pg_tblspc/$OID")" = "$BASE/restore1_tblspc/$OID" ] || fail "tablespace link not made to its new home"
grep -Eq "barmans3-wal-restore.* --layout barman-cloud $SRV %f %p" "$BASE/restore1/postgresql.auto.conf" || fail "restore_command: $(tail -3 "$BASE/restore1/postgresql.auto.conf")"
printf "recovery_target_name = 'rp'\nrecovery_target_action = 'promote'\n" >> "$BASE/restore1/postgresql.auto.conf"
# This copy becomes timeline 2 and archives it into the bucket, as a failover would.
start2 "$BASE/restore1" keep || fail "B1 did not start: $(tail -5 "$BASE/pglog/restore1.log")"
promoted || fail "B1 recovery did not finish: $(tail -5 "$BASE/pglog/restore1.log")"
count_ok 3000
psql2 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(10001,10500) g; INSERT INTO ts SELECT generate_series(10001,10500);"
before=$(psql2 "SELECT archived_count FROM pg_stat_archiver")
psql2 "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 1 60); do [ "$(psql2 "SELECT archived_count FROM pg_stat_archiver")" -gt "$before" ] && break; sleep 1; done
[ "$(psql2 "SELECT archived_count FROM pg_stat_archiver")" -gt "$before" ] || fail "timeline 2 not archived: $(psql2 'SELECT * FROM pg_stat_archiver')"
stop2 "$BASE/restore1"
HIST=$(b3 store ls "$SRV/wals/")
grep -qE '00000002\.history\.(gz|snappy)' <<<"$HIST" || fail "timeline 2's history not archived: $HIST"

step "B1 again: recovery follows the history file onto timeline 2"
restore "$BASE/restore3" "$ID1" --recovery --recovery-config "$BASE/restore.yaml"
start2 "$BASE/restore3" || fail "B1 (timeline 2) did not start: $(tail -5 "$BASE/pglog/restore3.log")"
promoted || fail "B1 (timeline 2) recovery did not finish: $(tail -5 "$BASE/pglog/restore3.log")"
[ "$(psql2 'SELECT count(*), max(id) FROM t')" = "3500|10500" ] || fail "rows on timeline 2: $(psql2 'SELECT count(*), max(id) FROM t')"
[ "$(psql2 'SELECT count(*) FROM ts')" = "3500" ] || fail "tablespace rows on timeline 2: $(psql2 'SELECT count(*) FROM ts')"
stop2 "$BASE/restore3"

step "hostile rows: refused, never exit 0, nothing outside DEST"
EV=evil
INFO=$(b3 store ls "$SRV/base/$ID1/" | awk '{print $2}' | grep '/backup.info$')
b3 store get "${INFO#"$PREFIX/"}" "$BASE/b3/backup.info"
grep -v '^tablespaces=' "$BASE/b3/backup.info" > "$BASE/b3/notbs.info"
python3 - "$BASE/b3/escape.tar.gz" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as t:
    for name in ("PG_VERSION", "../escaped"):
        data = b"15\n"
        i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
PY
DATA1=$(b3 store ls "$SRV/base/$ID1/" | awk '{print $2}' | grep '/data.tar.gz$')
b3 store get "${DATA1#"$PREFIX/"}" "$BASE/b3/data.tar.gz"
head -c $(( $(stat -c %s "$BASE/b3/data.tar.gz") / 2 )) "$BASE/b3/data.tar.gz" > "$BASE/b3/cut.tar.gz"
chown barman: "$BASE/b3"/*
b3 store put "$BASE/b3/notbs.info" "$EV/base/20300101T000001/backup.info"
b3 store put "$BASE/b3/escape.tar.gz" "$EV/base/20300101T000001/data.tar.gz"
b3 store put "$BASE/b3/notbs.info" "$EV/base/20300101T000002/backup.info"
b3 store put "$BASE/b3/cut.tar.gz" "$EV/base/20300101T000002/data.tar.gz"
for id in 20300101T000001 20300101T000002; do
  d="$BASE/restore_$id"; mkdir -p "$d"; chown postgres: "$d"
  if as_pg "$BIN --config $BASE/restore.yaml base-restore --layout barman-cloud $EV $id $d" 2>"$BASE/err"; then
    fail "hostile backup $id restored with exit 0"
  fi
  echo "refused $id: $(tail -1 "$BASE/err")" >&2
  [ -z "$(ls -A "$d")" ] || fail "hostile backup $id left files in DEST: $(ls -A "$d")"
done
[ ! -e "$BASE/escaped" ] || fail "a tar member was written outside DEST"
set +e
VER=$(b3 verify --layout barman-cloud $EV 20300101T000002 2>/dev/null); RC=$?
set -e
[ "$RC" = 1 ] && grep -q "^unreadable .*20300101T000002/data.tar.gz" <<<"$VER" || fail "verify of a truncated archive: exit $RC: $VER"
# A WAL of another segment stored under a segment's name.
SEGS=$(grep -oE '[0-9A-F]{16}/[0-9A-F]{24}\.snappy' <<<"$WALS" | sort)
A=$(head -1 <<<"$SEGS"); B=$(sed -n 2p <<<"$SEGS")
b3 store get "$SRV/wals/$A" "$BASE/b3/a.wal"; chown barman: "$BASE/b3/a.wal"
b3 store put "$BASE/b3/a.wal" "$EV/wals/$B"
mkdir -p "$BASE/walout"; chown postgres: "$BASE/walout"
set +e
as_pg "$BIN --config $BASE/restore.yaml wal-restore --layout barman-cloud $EV $(basename "$B" .snappy) $BASE/walout/x" 2>"$BASE/err"
RC=$?
set -e
[ "$RC" = 200 ] || fail "a WAL of another segment: exit $RC, want 200: $(cat "$BASE/err")"
[ ! -e "$BASE/walout/x" ] || fail "a WAL of another segment was placed at %p"
echo "refused the WAL: $(tail -1 "$BASE/err")" >&2

echo "E2E OK: $VERSION; B1 $ID1 (gzip, tablespace $OID, PITR), B2 $ID2 (snappy, parts, same as barman-cloud-restore), WALs gzip and snappy, hostile rows refused, prefix $PREFIX" >&2
