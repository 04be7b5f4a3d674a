#!/usr/bin/env bash
# End to end on a real PostgreSQL 15 and a real Barman (run by tests/barman_e2e.rs, as root):
# PostgreSQL runs as postgres, Barman and barmans3's hooks and syncs as barman, the restore's
# restore_command as postgres. Needs: BARMANS3_BIN and the BARMANS3_TEST_S3_* variables of a
# running Garage. Prints "E2E OK" at the end; any failed step exits non-zero with its name.
# Output is matched with here-strings, never `cmd | grep -q`: under pipefail grep's early exit
# can fail the writer with SIGPIPE.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base e2e

cleanup() {
  set +e
  as_barman "$B receive-wal --stop $SRV" >/dev/null 2>&1
  as_pg "$PGBIN/pg_ctl -D $BASE/restore -m immediate -w stop" >/dev/null 2>&1
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout tbs ""

step "PostgreSQL 15 on a socket, port $PORT"
e2e_postgres "" ""

e2e_config e2e "  max_attempts: 3" "  min_remote_backups: 1"
# A second store for replicate: another prefix of the same bucket (server-side copies).
for f in "$CFG" "$BASE/restore.yaml"; do
  cat >> "$f" <<EOC
stores:
  replica:
    s3:
      endpoint: $BARMANS3_TEST_S3_ENDPOINT
      region: garage
      bucket: $BARMANS3_TEST_S3_BUCKET
      prefix: $PREFIX-replica
      access_key_id: $BARMANS3_TEST_S3_ACCESS_KEY_ID
      secret_access_key: $BARMANS3_TEST_S3_SECRET_ACCESS_KEY
      part_size: 5MiB
EOC
done

cat > "$BASE/barman.conf" <<EOF
[barman]
barman_user = barman
barman_home = $BASE/barman
log_file = $BASE/log/barman.log
compression = gzip
[$SRV]
conninfo = host=$BASE/sock port=$PORT user=barman dbname=postgres
streaming_conninfo = host=$BASE/sock port=$PORT user=streaming_barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
create_slot = auto
path_prefix = $PGBIN
immediate_checkpoint = true
retention_policy = REDUNDANCY 1
post_backup_script = $BIN --config $CFG queue-add
EOF
chown barman: "$BASE/barman.conf"
B="/usr/bin/barman -c $BASE/barman.conf"

step "rows, and a tablespace (its files must be uploaded once, as a link in pg_tblspc)"
psql1 "CREATE TABLESPACE t1 LOCATION '$BASE/tbs'"
psql1 "CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1,1000) g; CREATE TABLE ts(id int) TABLESPACE t1; INSERT INTO ts SELECT generate_series(1,500);"

step "barman cron (slot, receive-wal), switch-wal"
as_barman "$B cron" >/dev/null; sleep 3
as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null

step "plain barman backup: the hook only queues"
as_barman "$B backup $SRV" >/dev/null
TASK=$(ls "$BASE/b3/queue"/*.run)
ID1=$(basename "$TASK" .run)
grep -q '"BARMAN_STATUS": "WAITING_FOR_WALS"' "$TASK" || fail "hook did not see WAITING_FOR_WALS: $(cat "$TASK")"
INFO1=$BASE/barman/$SRV/meta/$ID1-backup.info
[ -f "$INFO1" ] || INFO1=$BASE/barman/$SRV/base/$ID1/backup.info
snapshot() { (cd "$BASE/barman/$SRV/base" && find . -printf '%p %y %s %m\n' | sort); }

step "base-sync while Barman still says WAITING_FOR_WALS: task stays queued, nothing uploaded"
if grep -q '^status=WAITING_FOR_WALS' "$INFO1"; then
  b3 base-sync
  [ -f "$BASE/b3/queue/$ID1.run" ] || fail "task left .run while waiting for WALs"
  grep -q "$ID1" <<<"$(b3 base-ls $SRV)" && fail "backup uploaded before DONE"
else
  echo "(Barman already marked $ID1 DONE)" >&2
fi

step "Barman completes the backup (check-backup via cron); base-sync uploads it"
for i in $(seq 1 30); do
  grep -q '^status=DONE' "$INFO1" && break
  as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null 2>&1 || true
  as_barman "$B cron" >/dev/null 2>&1; sleep 2
done
grep -q '^status=DONE' "$INFO1" || fail "Barman never marked $ID1 DONE"
BEFORE=$(snapshot)
b3 base-sync
[ -f "$BASE/b3/queue/$ID1.done" ] || fail "task not done: $(ls "$BASE/b3/queue")"
AFTER=$(snapshot)
[ "$BEFORE" = "$AFTER" ] || fail "base-sync changed Barman's backup directory: $(diff <(echo "$BEFORE") <(echo "$AFTER"))"

step "tablespace uploaded once: under base/$ID1/<oid>/, and pg_tblspc holds only a link"
OBJECTS=$(b3 store ls "$SRV/base/$ID1/")
OID=$(ls "$BASE/barman/$SRV/base/$ID1" | grep -E '^[0-9]+$' | head -1)
[ -n "$OID" ] || fail "no tablespace directory in the Barman backup"
grep -q "/base/$ID1/$OID/" <<<"$OBJECTS" || fail "tablespace files missing"
if grep -q "/base/$ID1/data/pg_tblspc/$OID/" <<<"$OBJECTS"; then fail "tablespace uploaded twice (symlink followed)"; fi
grep -q "/base/$ID1/barmans3.manifest" <<<"$OBJECTS" || fail "manifest missing"

step "wal-sync, more rows after the backup, switch-wal, wal-sync again"
b3 wal-sync $SRV
psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001,2000) g; INSERT INTO ts SELECT generate_series(501,700);"
as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null
b3 wal-sync $SRV
b3 base-ls $SRV

step "restore from the bucket alone: base-restore + wal-restore as restore_command"
mkdir -p "$BASE/restore_tbs" "$BASE/restore"; chown postgres: "$BASE/restore_tbs" "$BASE/restore"; chmod 700 "$BASE/restore"
as_pg "$BIN --config $BASE/restore.yaml base-restore --recovery --tablespace $OID=$BASE/restore_tbs/$OID $SRV $ID1 $BASE/restore"
grep -Eq "barmans3-wal-restore.* $SRV %f %p" "$BASE/restore/postgresql.auto.conf" || fail "restore_command not written"
[ "$(readlink "$BASE/restore/pg_tblspc/$OID")" = "$BASE/restore_tbs/$OID" ] || fail "tablespace link not relocated"
as_pg "$PGBIN/pg_ctl -D $BASE/restore -l $BASE/pglog/restore.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || { cat "$BASE/pglog/restore.log" >&2; fail "restored cluster did not start"; }
for i in $(seq 1 60); do
  [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1
done
[ "$(psql2 'SELECT pg_is_in_recovery()')" = "f" ] || fail "recovery did not finish: $(tail -5 "$BASE/pglog/restore.log")"
[ "$(psql2 'SELECT count(*), sum(id) FROM t')" = "2000|2001000" ] || fail "rows in t: $(psql2 'SELECT count(*), sum(id) FROM t')"
[ "$(psql2 'SELECT count(*) FROM ts')" = "700" ] || fail "rows in ts: $(psql2 'SELECT count(*) FROM ts')"
as_pg "$PGBIN/pg_ctl -D $BASE/restore -m fast -w stop >/dev/null"

step "replicate to the second store; the replica alone restores the same rows"
b3 replicate --to replica $SRV
rm -rf "$BASE/restore" "$BASE/restore_tbs"
mkdir -p "$BASE/restore_tbs" "$BASE/restore"; chown postgres: "$BASE/restore_tbs" "$BASE/restore"; chmod 700 "$BASE/restore"
as_pg "$BIN --config $BASE/restore.yaml --store replica base-restore --recovery --tablespace $OID=$BASE/restore_tbs/$OID $SRV $ID1 $BASE/restore"
# (barmans3 itself: the lean program serves only what names the main store)
grep -Eq -- "bin/barmans3'? .*--store replica wal-restore $SRV %f %p" "$BASE/restore/postgresql.auto.conf" || fail "restore_command does not read the replica: $(grep restore_command "$BASE/restore/postgresql.auto.conf")"
as_pg "$PGBIN/pg_ctl -D $BASE/restore -l $BASE/pglog/replica.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || { cat "$BASE/pglog/replica.log" >&2; fail "the cluster restored from the replica did not start"; }
for i in $(seq 1 60); do
  [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1
done
[ "$(psql2 'SELECT pg_is_in_recovery()')" = "f" ] || fail "recovery from the replica did not finish: $(tail -5 "$BASE/pglog/replica.log")"
[ "$(psql2 'SELECT count(*), sum(id) FROM t')" = "2000|2001000" ] || fail "rows in t from the replica: $(psql2 'SELECT count(*), sum(id) FROM t')"
[ "$(psql2 'SELECT count(*) FROM ts')" = "700" ] || fail "rows in ts from the replica: $(psql2 'SELECT count(*) FROM ts')"
as_pg "$PGBIN/pg_ctl -D $BASE/restore -m fast -w stop >/dev/null"

step "second backup (--wait: hook sees DONE), base-sync"
sleep 1
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
b3 base-sync
ID2=$(ls "$BASE/b3/queue" | grep -v "^$ID1" | grep '\.done$' | sed 's/\.done$//')
[ -n "$ID2" ] || fail "second backup not synced: $(ls "$BASE/b3/queue")"

step "retention (REDUNDANCY 1) deletes $ID1 locally; full-sync deletes it remotely"
for i in $(seq 1 20); do
  [ -e "$BASE/barman/$SRV/base/$ID1" ] || break
  as_barman "$B cron" >/dev/null 2>&1; sleep 2
done
[ ! -e "$BASE/barman/$SRV/base/$ID1" ] || fail "Barman retention did not delete $ID1"
PLAN=$(b3 full-sync --dry-run $SRV)
grep -q "delete backup $ID1" <<<"$PLAN" || fail "dry run does not plan $ID1: $PLAN"
grep -q "$ID1" <<<"$(b3 base-ls $SRV)" || fail "dry run deleted something"
b3 full-sync $SRV
LS=$(b3 --json base-ls $SRV)
grep -q "\"$ID1\"" <<<"$LS" && fail "remote $ID1 not deleted: $LS"
grep -q "\"$ID2\"" <<<"$LS" || fail "remote $ID2 missing: $LS"
BEGIN2=$(echo "$LS" | python3 -c 'import json,sys; print([b["begin_wal"] for b in json.load(sys.stdin)][0])')
for key in $(b3 store ls "$SRV/wals/" | awk '{print $2}'); do
  name=${key##*/}
  case $name in *.history) continue;; esac
  [[ "${name:0:24}" < "${BEGIN2:0:24}" ]] && fail "WAL $name older than $BEGIN2 was kept"
done

step "full-sync against an empty barman home deletes nothing and fails clearly"
mkdir -p "$BASE/empty/$SRV/base" "$BASE/empty/$SRV/wals"; chown -R barman: "$BASE/empty"
sed "s#barman_home = $BASE/barman#barman_home = $BASE/empty#" "$BASE/barman.conf" > "$BASE/barman-empty.conf"
sed -e "s#$BASE/barman.conf#$BASE/barman-empty.conf#" -e "s#$BASE/b3/state#$BASE/b3/state-empty#" "$CFG" > "$BASE/b3/empty.yaml"
chown barman: "$BASE/barman-empty.conf" "$BASE/b3/empty.yaml"; chmod 600 "$BASE/b3/empty.yaml"
COUNT_BEFORE=$(b3 store ls "$SRV/" | wc -l)
if OUT=$(as_barman "$BIN --config $BASE/b3/empty.yaml full-sync $SRV" 2>&1); then fail "full-sync on an empty home succeeded: $OUT"; fi
grep -q "refusing to delete anything" <<<"$OUT" || fail "unclear message: $OUT"
[ "$(b3 store ls "$SRV/" | wc -l)" = "$COUNT_BEFORE" ] || fail "objects changed after the refused full-sync"

echo "E2E OK: backups $ID1 (restored, then retired) and $ID2, prefix $PREFIX" >&2
