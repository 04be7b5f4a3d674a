#!/usr/bin/env bash
# Point-in-time recovery with barmans3's own encryption on (age), on a real PostgreSQL 15,
# Barman 3.20 and Garage, run by tests/it/barman_e2e.rs as root:
#   - base-sync and wal-sync seal every object to an age recipient (the Barman host holds no
#     identity); what the bucket holds is age, opened by the age tool to Barman's own bytes;
#   - the restore side (postgres, with the identity and encryption.require_encrypted) restores
#     the backup, and PostgreSQL replays the encrypted WALs through wal-restore with prefetch to
#     a restore point: the rows of that moment, no more, no fewer;
#   - a WAL swapped for plaintext in the bucket is refused (require_encrypted): exit 200, one
#     line naming the setting.
# Needs BARMANS3_BIN, BARMAN (the venv's barman) and the BARMANS3_TEST_S3_* variables. Prints
# "E2E OK" at the end; a failed step exits non-zero with its name.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base age

cleanup() {
  set +e
  as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1
  for d in "$BASE"/restore*; do [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1; done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  pkill -f "wal-prefetch $SRV --spool $BASE/" >/dev/null 2>&1
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout "keys pgstate" "barman.d"
chmod 700 "$BASE/keys"
VERSION=$(as_barman "$BARMAN --version" | head -1)
step "Barman: $VERSION"

step "an age identity on the restore side only; the Barman host gets its public key"
as_pg "age-keygen -o $BASE/keys/age.key" >/dev/null 2>&1 || fail "age-keygen"
chmod 600 "$BASE/keys/age.key"
RECIPIENT=$(age-keygen -y "$BASE/keys/age.key")
[[ "$RECIPIENT" == age1* ]] || fail "no recipient: $RECIPIENT"

step "PostgreSQL 15 on a socket, port $PORT"
e2e_postgres "" ""
e2e_config age "" ""
# The same store without encryption: what someone who can write the bucket could put there.
install -o barman -g barman -m 600 "$CFG" "$BASE/b3/plain.yaml"
printf 'encryption:\n  recipients: [%s]\n' "$RECIPIENT" >> "$CFG"
# The restore side: its own state, the identity, and nothing read unless encrypted.
sed -i "s#$BASE/b3/state#$BASE/pgstate#; s#$BASE/b3/queue#$BASE/pgstate/queue#" "$BASE/restore.yaml"
printf 'encryption:\n  recipients: [%s]\n  identity_file: %s\n  require_encrypted: true\n' \
  "$RECIPIENT" "$BASE/keys/age.key" >> "$BASE/restore.yaml"
RCFG=$BASE/restore.yaml

e2e_barman_server "" "compression = zstd\n" barman.d
rows() { psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($1,$2) g"; }

step "first rows, backup B1; base-sync seals it"
psql1 "CREATE TABLE t(id int, v text)"
rows 1 1000
as_barman "$B cron" >/dev/null; sleep 3
e2e_archive_wal
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
ID1=$(basename "$(ls "$BASE/b3/queue"/*.run)" .run)
b3 base-sync
[ -f "$BASE/b3/queue/$ID1.done" ] || fail "B1 not uploaded: $(ls "$BASE/b3/queue")"

step "rows in batches, each in segments of its own, a restore point halfway; wal-sync seals the WALs"
for batch in 1001 1501 2001 2501; do
  [ "$batch" = 2001 ] && psql1 "SELECT pg_create_restore_point('mid')" >/dev/null
  rows "$batch" $((batch + 499))
  e2e_archive_wal
done
as_barman "$B cron" >/dev/null 2>&1 || true
e2e_archive_wal
b3 wal-sync $SRV

step "the bucket holds age objects that the age tool opens to Barman's own bytes"
SEGS=$(b3 store ls "$SRV/wals/" | awk '{print $NF}' | grep -E '/[0-9A-F]{24}$' | sort)
[ "$(grep -c . <<<"$SEGS")" -ge 3 ] || fail "too few WAL segments in the bucket: $SEGS"
KEY=$(head -1 <<<"$SEGS"); KEY=${KEY#"$PREFIX/"}
b3 store get --raw "$KEY" "$BASE/b3/sealed.wal" >/dev/null
[ "$(head -c 21 "$BASE/b3/sealed.wal")" = "age-encryption.org/v1" ] || fail "$KEY is not an age object"
age -d -i "$BASE/keys/age.key" "$BASE/b3/sealed.wal" > "$BASE/b3/opened.wal" || fail "age could not open $KEY"
LOCAL=$(find "$BASE/barman/$SRV/wals" -name "$(basename "$KEY")" | head -1)
cmp -s "$BASE/b3/opened.wal" "$LOCAL" || fail "$KEY opens to other bytes than Barman's $LOCAL"
b3 store get --raw "$SRV/base/$ID1/backup.info" "$BASE/b3/info.sealed" >/dev/null
[ "$(head -c 21 "$BASE/b3/info.sealed")" = "age-encryption.org/v1" ] || fail "backup.info is not sealed"

step "restore B1 as postgres and replay the encrypted WALs with prefetch to the restore point"
rm -rf "$BASE/restore1"; mkdir -p "$BASE/restore1"; chown postgres: "$BASE/restore1"; chmod 700 "$BASE/restore1"
as_pg "$BIN --config $RCFG base-restore --recovery $SRV $ID1 $BASE/restore1" >/dev/null 2>&1 || fail "base-restore"
printf "recovery_target_name = 'mid'\nrecovery_target_action = 'promote'\n" >> "$BASE/restore1/postgresql.auto.conf"
as_pg "$PGBIN/pg_ctl -D $BASE/restore1 -l $BASE/pglog/restore1.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || fail "restored cluster did not start: $(tail -5 "$BASE/pglog/restore1.log")"
for _ in $(seq 1 90); do
  [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1
done
[ "$(psql2 'SELECT pg_is_in_recovery()')" = "f" ] || fail "recovery did not finish: $(tail -5 "$BASE/pglog/restore1.log")"
[ "$(psql2 'SELECT count(*), max(id) FROM t')" = "2000|2000" ] || fail "rows at the restore point: $(psql2 'SELECT count(*), max(id) FROM t'), want 2000|2000"
grep -q "recovery stopping at restore point \"mid\"" "$BASE/pglog/restore1.log" || fail "not stopped at the restore point: $(grep -i recovery "$BASE/pglog/restore1.log" | tail -3)"
grep -q "from the prefetch spool" "$BASE/pglog/restore1.log" || fail "no WAL came from the prefetch spool: $(grep -i "bytes\|restore" "$BASE/pglog/restore1.log" | tail -8)"
as_pg "$PGBIN/pg_ctl -D $BASE/restore1 -m fast -w stop >/dev/null"

step "a WAL swapped for plaintext in the bucket: refused by require_encrypted, exit 200"
as_barman "$BIN -q --config $BASE/b3/plain.yaml store put $LOCAL $KEY" >/dev/null
b3 store get --raw "$KEY" "$BASE/b3/swapped.wal" >/dev/null
cmp -s "$BASE/b3/swapped.wal" "$LOCAL" || fail "the swap did not put plaintext"
mkdir -p "$BASE/restore2/pg_wal"; chown -R postgres: "$BASE/restore2"
set +e
OUT=$(as_pg "$BIN --config $RCFG wal-restore $SRV $(basename "$KEY") $BASE/restore2/pg_wal/RECOVERYXLOG" 2>&1)
RC=$?
set -e
[ "$RC" = 200 ] || fail "a plaintext WAL gave exit $RC, want 200: $OUT"
grep -q "encryption.require_encrypted" <<<"$OUT" || fail "the refusal does not name the setting: $OUT"
[ "$(grep -c . <<<"$OUT")" = 1 ] || fail "not one line: $OUT"
[ ! -e "$BASE/restore2/pg_wal/RECOVERYXLOG" ] || fail "the plaintext WAL was handed over"

echo "E2E OK: $VERSION; B1 $ID1 restored to restore point 'mid' through age-encrypted objects with prefetch, prefix $PREFIX" >&2
