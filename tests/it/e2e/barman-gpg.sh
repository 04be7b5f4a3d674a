#!/usr/bin/env bash
# End to end with Barman's own encryption (Barman 3.20, `encryption = gpg`) on a real
# PostgreSQL 15 and Garage, run by tests/it/barman_e2e.rs as root:
#   - Barman encrypts a tar backup (base.tar.gz.gpg) and every archived WAL to a GPG key with a
#     passphrase; base-sync and wal-sync ship them as they are;
#   - base-restore and wal-restore, as postgres on the restore side, decrypt through gpg with
#     the passphrase Barman's own encryption_passphrase_command prints (the secret key in the
#     restore user's keyring only): PostgreSQL starts and replays to the right rows;
#   - a keyring without the secret key, and no Barman config saying how to decrypt: one line
#     each, nothing left in the destination; wal-restore aborts recovery (exit 200), never 1.
# Needs BARMANS3_BIN, BARMAN (the venv's barman) and the BARMANS3_TEST_S3_* variables. Prints
# "E2E OK" at the end; a failed step exits non-zero with its name.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base gpg
KEYID=barmans3-e2e@example.org
PASSPHRASE="e2e-$RANDOM$RANDOM-pass"

cleanup() {
  set +e
  as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1
  for d in "$BASE"/restore*; do [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1; done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  as_barman "GNUPGHOME=$BASE/gnupg-barman gpgconf --kill gpg-agent" >/dev/null 2>&1
  for h in gnupg-pg gnupg-empty; do as_pg "GNUPGHOME=$BASE/$h gpgconf --kill gpg-agent" >/dev/null 2>&1; done
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout "gnupg-pg gnupg-empty secret" "gnupg-barman barman.d"
chmod 700 "$BASE/gnupg-pg" "$BASE/gnupg-empty" "$BASE/secret" "$BASE/gnupg-barman"
VERSION=$(as_barman "$BARMAN --version" | head -1)
step "Barman: $VERSION"

step "a GPG key with a passphrase: Barman encrypts to it, the restore side holds its secret"
as_barman "GNUPGHOME=$BASE/gnupg-barman gpg --batch --pinentry-mode loopback --passphrase '$PASSPHRASE' --quick-gen-key 'barmans3 e2e <$KEYID>' default default never" >/dev/null 2>&1 \
  || fail "gpg key generation"
as_barman "GNUPGHOME=$BASE/gnupg-barman gpg --batch --pinentry-mode loopback --passphrase '$PASSPHRASE' --export-secret-keys $KEYID" > "$BASE/secret.gpg"
as_barman "GNUPGHOME=$BASE/gnupg-barman gpg --batch --export $KEYID" > "$BASE/public.gpg"
chmod 644 "$BASE/secret.gpg" "$BASE/public.gpg"
as_pg "GNUPGHOME=$BASE/gnupg-pg gpg --batch --pinentry-mode loopback --passphrase '$PASSPHRASE' --import $BASE/secret.gpg" >/dev/null 2>&1 \
  || fail "secret key import on the restore side"
as_pg "GNUPGHOME=$BASE/gnupg-empty gpg --batch --import $BASE/public.gpg" >/dev/null 2>&1 || fail "public key import"
rm -f "$BASE/secret.gpg"
printf '%s\n' "$PASSPHRASE" > "$BASE/secret/passphrase"
chown postgres: "$BASE/secret/passphrase"; chmod 600 "$BASE/secret/passphrase"

step "PostgreSQL 15 on a socket, port $PORT"
e2e_postgres "" ""
e2e_config gpg "" ""

e2e_barman_server "" "backup_compression = gzip
backup_compression_format = tar
compression = zstd
encryption = gpg
encryption_key_id = $KEYID
encryption_passphrase_command = cat $BASE/secret/passphrase
" barman.d
# Root's, as the package installs Barman's config: barmans3 runs the passphrase command only from
# a config no other user can write.
chown root: "$BASE/barman.conf" "$BASE/barman.d" "$BASE/barman.d/$SRV.conf"
chmod 755 "$BASE/barman.d"; chmod 644 "$BASE/barman.conf" "$BASE/barman.d/$SRV.conf"
B="env GNUPGHOME=$BASE/gnupg-barman $BARMAN -c $BASE/barman.conf"
rows() { psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($1,$2) g"; }

step "first rows, barman cron"
psql1 "CREATE TABLE t(id int, v text)"
rows 1 1000
as_barman "$B cron" >/dev/null; sleep 3
e2e_archive_wal

step "backup B1 (tar, gzip, encrypted); base-sync ships it as it is"
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
ID1=$(basename "$(ls "$BASE/b3/queue"/*.run)" .run)
b3 base-sync
[ -f "$BASE/b3/queue/$ID1.done" ] || fail "B1 not uploaded: $(ls "$BASE/b3/queue")"
OBJECTS=$(b3 store ls "$SRV/base/$ID1/")
grep -q "data/base.tar.gz.gpg" <<<"$OBJECTS" || fail "B1 is not an encrypted tar backup: $OBJECTS"
b3 store get "$SRV/base/$ID1/backup.info" "$BASE/b3/info" >/dev/null
grep -q "^encryption=gpg" "$BASE/b3/info" || fail "Barman did not record the encryption: $(cat "$BASE/b3/info")"

step "more rows after the backup; Barman encrypts the WALs it archives; wal-sync ships them"
rows 1001 3000
e2e_archive_wal
as_barman "$B cron" >/dev/null 2>&1 || true
e2e_archive_wal
b3 wal-sync $SRV
ENCRYPTED=$(python3 - "$BASE/barman/$SRV/wals" <<'PY'
import os, sys
n = 0
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if len(f) == 24:
            with open(os.path.join(root, f), "rb") as fh:
                n += fh.read(1)[:1] in (b"\x84", b"\x85", b"\xc1")
print(n)
PY
)
[ "$ENCRYPTED" -ge 2 ] || fail "Barman encrypted $ENCRYPTED WAL segments, expected at least 2"

restore() {  # $1: dir, $2: GNUPGHOME, $3: config; extra args after. Prints stderr, returns the exit.
  local dir=$1 home=$2 cfg=$3; shift 3
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres: "$dir"; chmod 700 "$dir"
  as_pg "GNUPGHOME=$home $BIN --config $cfg base-restore --recovery $* $SRV $ID1 $dir" 2>&1 >/dev/null
}
empty() { [ -z "$(ls -A "$1")" ] || fail "$2 left files in $1: $(ls -A "$1" | head -5)"; }
one_line() { [ "$(grep -c . <<<"$1")" = 1 ] || fail "$2: not one line: $1"; }

step "no secret key in the restoring user's keyring: one line, nothing written"
OUT=$(restore "$BASE/restore-nokey" "$BASE/gnupg-empty" "$BASE/restore.yaml") && fail "restored without the key"
grep -q "No secret key" <<<"$OUT" || fail "no-key message: $OUT"
grep -q "GNUPGHOME" <<<"$OUT" || fail "no-key message says nothing of the keyring: $OUT"
one_line "$(grep -v '^WARN\|removed the incomplete' <<<"$OUT")" "no-key refusal"
empty "$BASE/restore-nokey" "a restore without the key"

step "no Barman config saying how to decrypt: one line naming the settings, nothing written"
sed "s#config: $BASE/barman.conf#config: $BASE/no-such-barman.conf#" "$BASE/restore.yaml" > "$BASE/nobarman.yaml"
chown postgres: "$BASE/nobarman.yaml"; chmod 600 "$BASE/nobarman.yaml"
grep -q "no-such-barman.conf" "$BASE/nobarman.yaml" || fail "config not redirected"
OUT=$(restore "$BASE/restore-noconf" "$BASE/gnupg-pg" "$BASE/nobarman.yaml") && fail "restored without a way to decrypt"
grep -q "encryption_passphrase_command" <<<"$OUT" || fail "message does not name the setting: $OUT"
one_line "$OUT" "no-config refusal"
empty "$BASE/restore-noconf" "a restore without a way to decrypt"

step "a passphrase command in a Barman config another user can write: not run, one line, nothing written"
chown barman: "$BASE/barman.d/$SRV.conf"
OUT=$(restore "$BASE/restore-untrusted" "$BASE/gnupg-pg" "$BASE/restore.yaml") \
  && fail "ran the passphrase command from a config the barman user can write"
grep -q "encryption_passphrase_command in .* is not run: .* is owned by uid" <<<"$OUT" || fail "untrusted-config message: $OUT"
one_line "$(grep -v '^WARN\|removed the incomplete' <<<"$OUT")" "untrusted-config refusal"
empty "$BASE/restore-untrusted" "a restore with a config another user can write"
chown root: "$BASE/barman.d/$SRV.conf"

step "wal-restore of an encrypted WAL without the key: exit 200, one line, no file"
SEG=$(b3 store ls "$SRV/wals/" | awk '{print $NF}' | grep -oE '[0-9A-F]{24}$' | sort | tail -1)
[ -n "$SEG" ] || fail "no WAL segment in the bucket"
mkdir -p "$BASE/restore-nokey/pg_wal"; chown -R postgres: "$BASE/restore-nokey"
set +e
OUT=$(as_pg "GNUPGHOME=$BASE/gnupg-empty $BIN --config $BASE/restore.yaml wal-restore $SRV $SEG $BASE/restore-nokey/pg_wal/RECOVERYXLOG" 2>&1)
RC=$?
set -e
[ "$RC" = 200 ] || fail "wal-restore without the key exited $RC, want 200: $OUT"
grep -q "No secret key" <<<"$OUT" || fail "wal-restore no-key message: $OUT"
[ ! -e "$BASE/restore-nokey/pg_wal/RECOVERYXLOG" ] || fail "wal-restore wrote the file without the key"
rm -rf "$BASE/restore-nokey"

step "restore B1 from the bucket alone with Barman's passphrase command; replay the encrypted WALs"
OUT=$(restore "$BASE/restore1" "$BASE/gnupg-pg" "$BASE/restore.yaml") || fail "base-restore: $OUT"
[ -f "$BASE/restore1/PG_VERSION" ] && [ -f "$BASE/restore1/global/pg_control" ] || fail "not a data directory"
grep -q "$PASSPHRASE" <<<"$OUT" && fail "the passphrase was printed"
as_pg "GNUPGHOME=$BASE/gnupg-pg $PGBIN/pg_ctl -D $BASE/restore1 -l $BASE/pglog/restore1.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || fail "restored cluster did not start: $(tail -5 "$BASE/pglog/restore1.log")"
for _ in $(seq 1 90); do
  [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1
done
[ "$(psql2 'SELECT pg_is_in_recovery()')" = "f" ] || fail "recovery did not finish: $(tail -5 "$BASE/pglog/restore1.log")"
[ "$(psql2 'SELECT count(*), max(id) FROM t')" = "3000|3000" ] || fail "rows: $(psql2 'SELECT count(*), max(id) FROM t'), want 3000|3000"
grep -q "$PASSPHRASE" "$BASE/pglog/restore1.log" && fail "the passphrase reached PostgreSQL's log"
as_pg "$PGBIN/pg_ctl -D $BASE/restore1 -m fast -w stop >/dev/null"

step "the Barman host is lost: catalog-restore puts the GPG-encrypted files back as Barman wrote them"
as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1 || true
sleep 1
mv "$BASE/barman/$SRV" "$BASE/lost-$SRV"
b3 catalog-restore --layout meta $SRV >/dev/null
GPGFILES=$(cd "$BASE/lost-$SRV/base/$ID1" && find . -type f -name '*.gpg')
[ -n "$GPGFILES" ] || fail "no .gpg file in the lost backup"
for f in $GPGFILES; do
  cmp -s "$BASE/lost-$SRV/base/$ID1/$f" "$BASE/barman/$SRV/base/$ID1/$f" || fail "catalog-restore did not give $f back as Barman wrote it"
done
SAME=$(python3 - "$BASE/lost-$SRV/wals" "$BASE/barman/$SRV/wals" <<'PY'
import os, sys
same = 0
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if len(f) != 24:
            continue
        old = open(os.path.join(root, f), "rb").read()
        if old[:1] not in (b"\x84", b"\x85", b"\xc1"):
            continue
        new_path = os.path.join(sys.argv[2], os.path.relpath(root, sys.argv[1]), f)
        if not os.path.exists(new_path) or open(new_path, "rb").read() != old:
            sys.exit(f"{f}: not given back as Barman wrote it")
        same += 1
print(same)
PY
) || fail "$SAME"
[ "$SAME" -ge 2 ] || fail "only $SAME encrypted WALs compared"
grep -q "^encryption=gpg" "$BASE/barman/$SRV/meta/$ID1-backup.info" || fail "backup.info lost encryption=gpg"
as_barman "$B list-backups --minimal $SRV" | grep -q "$ID1" || fail "barman does not list $ID1 after catalog-restore"

echo "E2E OK: $VERSION; B1 $ID1 (tar gzip, encryption = gpg), $ENCRYPTED encrypted WAL segments, $SAME given back encrypted by catalog-restore, prefix $PREFIX" >&2
