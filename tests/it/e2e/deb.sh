#!/usr/bin/env bash
# The packaged path as a DBA walks it, run by tests/it/packaging.rs as root on a throwaway
# machine: the .deb installed into the real system with dpkg -i, then the README's walkthrough
# ("From a fresh machine to a first synced and restored backup") run line by line as the README
# prints it, read from README.md (so this test breaks when the README does), with
#   - `sudo` / `sudoedit` / `apt install ./…deb` as thin stand-ins (no sudo on the test
#     machine; sudoedit writes the s3 section the README asks for; apt install is dpkg -i of
#     the package built by this run);
#   - the README's placeholders filled: `<ID>` with the backup Barman made, `/tmp/restore` with a
#     directory of this run;
#   - the "Restoring as postgres" recipe (a postgres-readable restore.yaml without secrets,
#     credentials from postgres's own AWS profile) read from the README too, its example endpoint,
#     bucket and prefix replaced with the test's;
#   - the Barman server `pg` the walkthrough assumes: /etc/barman.d/pg.conf streaming from a
#     PostgreSQL 15 of this run.
# Then the restored copy is started as postgres and must hold every row (those after the backup
# come through restore_command from the bucket), and the README's NRPE command line must say OK.
# Everything is removed afterwards: both clusters, the Barman server, the AWS profile and the
# package (dpkg --purge). BARMAN_PATH: a directory put first in PATH (Barman 3.20's venv).
# Needs the BARMANS3_TEST_S3_* variables. Prints "E2E OK" at the end.
set -euo pipefail

DEB=${1:?usage: deb.sh PACKAGE.deb}
PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
HERE=$(cd "$(dirname "$0")" && pwd)
README=$HERE/../../../README.md
. "$HERE/lib.sh"
export PATH=${BARMAN_PATH:+$BARMAN_PATH:}/usr/sbin:/usr/bin:/sbin:/bin
PGHOME=$(getent passwd postgres | cut -d: -f6)
bm() { runuser -u barman -- barman "$@"; }  # the Barman PATH finds, as the README's lines run it

if dpkg-query -W -f '${Status}' barmans3 2>/dev/null | grep -q "install ok installed"; then
  fail "barmans3 is installed as a package already: this test installs and purges it (dpkg --purge barmans3 first)"
fi
for f in /etc/barman.d/$SRV.conf /var/lib/barman/$SRV /etc/barmans3 /var/lib/barmans3 "$PGHOME/.aws"; do
  [ ! -e "$f" ] || fail "$f exists: this test writes it (on a throwaway machine, as CI is); move it away first"
done

e2e_base deb
PREFIX="deb-$(date +%s)-$RANDOM"
cleanup() {
  set +e
  as_pg "$PGBIN/pg_ctl -D $BASE/restore -m immediate -w stop" >/dev/null 2>&1
  bm receive-wal --stop $SRV >/dev/null 2>&1
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  rm -f /etc/barman.d/$SRV.conf /etc/barmans3/restore.yaml
  rm -rf /var/lib/barman/$SRV "$PGHOME/.aws"
  dpkg --purge barmans3 >/dev/null 2>&1
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

mkdir -p "$BASE/pgdata" "$BASE/pglog" "$BASE/sock" "$BASE/sock2"
chown postgres: "$BASE/pgdata" "$BASE/pglog" "$BASE/sock" "$BASE/sock2"

step "PostgreSQL 15 on a socket, port $PORT, and the Barman server $SRV the walkthrough assumes ($(barman --version 2>&1 | tail -1))"
e2e_postgres "" ""
cat > /etc/barman.d/$SRV.conf <<EOF
[$SRV]
description = barmans3 packaged walkthrough
conninfo = host=$BASE/sock port=$PORT user=barman dbname=postgres
streaming_conninfo = host=$BASE/sock port=$PORT user=streaming_barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
create_slot = auto
path_prefix = $PGBIN
immediate_checkpoint = true
EOF
archive_wal() {
  bm switch-wal --force --archive --archive-timeout 60 $SRV >/dev/null 2>&1 \
    || { bm cron >/dev/null 2>&1; sleep 2; bm switch-wal --force --archive --archive-timeout 60 $SRV >/dev/null; }
}
psql1 "CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1,1000) g;"
bm cron >/dev/null; sleep 3
archive_wal

# The stand-ins the README's lines run with.
sudo() { if [ "$1" = -u ]; then local u=$2; shift 2; runuser -u "$u" -- "$@"; else "$@"; fi; }
sudoedit() {  # the s3 section the README's comment asks for, written over the installed example
  [ "$1" = /etc/barmans3/barmans3.yaml ] || fail "sudoedit $1: not the file the walkthrough edits"
  cat > "$1" <<EOF
s3:
  endpoint: $BARMANS3_TEST_S3_ENDPOINT
  region: garage
  bucket: $BARMANS3_TEST_S3_BUCKET
  prefix: $PREFIX
  access_key_id: $BARMANS3_TEST_S3_ACCESS_KEY_ID
  secret_access_key: $BARMANS3_TEST_S3_SECRET_ACCESS_KEY
EOF
}
apt() { [ "$1" = install ] || fail "apt $*: not in the walkthrough"; shift; dpkg -i "$@" >/dev/null; }

# postgres's own AWS profile, as "Restoring as postgres" says.
aws_profile() {
  install -d -o postgres -g postgres -m 700 "$PGHOME/.aws"
  printf '[barmans3-restore]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$BARMANS3_TEST_S3_ACCESS_KEY_ID" "$BARMANS3_TEST_S3_SECRET_ACCESS_KEY" > "$PGHOME/.aws/credentials"
  printf '[profile barmans3-restore]\nregion = garage\n' > "$PGHOME/.aws/config"
  chown postgres: "$PGHOME/.aws/credentials" "$PGHOME/.aws/config"
  chmod 600 "$PGHOME/.aws/credentials" "$PGHOME/.aws/config"
}

# README blocks: the first ```bash block after a heading or paragraph start.
block_after() {
  python3 - "$README" "$1" <<'PY'
import sys
text = open(sys.argv[1]).read()
_, _, rest = text.partition(sys.argv[2])
if not rest:
    sys.exit(f"README.md has no {sys.argv[2]!r}")
block = rest.split("```bash\n", 1)[1].split("```", 1)[0]
print(block, end="")
PY
}
WALK=$(block_after "## From a fresh machine to a first synced and restored backup")
RECIPE=$(block_after "**Restoring as postgres.**")
NRPE=$(grep -o 'command\[barmans3\]=[^`]*' "$README" | head -1 | cut -d= -f2-)
[ -n "$NRPE" ] || fail "README.md has no NRPE command line"
grep -q "https://s3.example.net" <<<"$RECIPE" || fail "the recipe's example endpoint changed: $RECIPE"
RECIPE=$(sed -e "s|https://s3.example.net|$BARMANS3_TEST_S3_ENDPOINT|" \
  -e "s|bucket: backups|bucket: $BARMANS3_TEST_S3_BUCKET|" \
  -e "s|prefix: barman\\\\n|prefix: $PREFIX\\\\n|" <<<"$RECIPE")
grep -q "prefix: $PREFIX" <<<"$RECIPE" || fail "the recipe's example prefix changed: $RECIPE"

mkdir -p "$BASE/pkg"; cp "$DEB" "$BASE/pkg/"; cd "$BASE/pkg"
ID=
while IFS= read -r line <&3; do
  cmd=${line%%  #*}; comment=${line#"$cmd"}
  cmd=$(sed 's/[[:space:]]*$//' <<<"$cmd")
  [ -n "$cmd" ] || continue
  if [[ $cmd == "sudo scripts/install" ]]; then
    cmd=$(sed -n 's/.*# or: //p' <<<"$comment")  # the package's way, as the comment gives it
  fi
  if [[ $cmd == *base-restore* ]]; then
    step "README recipe: Restoring as postgres"
    aws_profile
    eval "$RECIPE" >/dev/null || fail "the README's restore.yaml recipe failed"
    [ -n "$ID" ] || fail "no backup id for <ID>"
  fi
  cmd=${cmd//<ID>/$ID}
  cmd=${cmd//\/tmp\/restore/$BASE/restore}
  step "README: $cmd"
  eval "$cmd" || fail "the README's line failed: $cmd"
  if [[ $cmd == *"barman backup $SRV"* ]]; then
    # Barman marks it DONE once its last WAL is archived (what `barman cron` does every minute).
    for _ in $(seq 1 60); do
      ID=$(bm list-backup --minimal $SRV 2>/dev/null | head -1 | awk '{print $1}')
      status=$(bm show-backup $SRV "$ID" 2>/dev/null | sed -n 's/^ *Status *: *//p')
      [ "$status" = DONE ] && break
      archive_wal; bm cron >/dev/null 2>&1; sleep 1
    done
    [ "$status" = DONE ] || fail "backup $ID is $status, not DONE"
  fi
  if [[ $cmd == *"barmans3 base-sync"* ]]; then
    # Rows after the backup, in WAL the next line (wal-sync) ships.
    psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001,3000) g;"
    archive_wal
  fi
done 3<<<"$WALK"
[ "$(command -v barmans3)" = /usr/bin/barmans3 ] || fail "barmans3 is $(command -v barmans3), not the package's"
grep -q "^post_backup_retry_script = /usr/bin/barmans3 queue-add$" /etc/barman.d/$SRV.conf || fail "hook line: $(cat /etc/barman.d/$SRV.conf)"
[ "$(stat -c %U "$BASE/restore")" = postgres ] || fail "the restored directory is not postgres's"

step "the restored copy started as postgres: every row, through restore_command from the bucket"
as_pg "$PGBIN/pg_ctl -D $BASE/restore -l $BASE/pglog/restore.log -o \"-p $PORT2 -c unix_socket_directories=$BASE/sock2\" -w -t 120 start" >/dev/null \
  || fail "the restored copy did not start: $(tail -20 "$BASE/pglog/restore.log")"
for _ in $(seq 1 120); do
  [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break; sleep 1
done
[ "$(psql2 'SELECT pg_is_in_recovery()')" = f ] || fail "still in recovery: $(tail -20 "$BASE/pglog/restore.log")"
ROWS=$(psql2 'SELECT count(*) FROM t')
[ "$ROWS" = 3000 ] || fail "the restored copy has $ROWS rows, want 3000"
grep -q "restored log file" "$BASE/pglog/restore.log" || fail "no WAL came through restore_command: $(tail -20 "$BASE/pglog/restore.log")"
# Still there moments after recovery (the prefetcher waits for more requests a while).
[ -d "$BASE/restore/pg_wal/.barmans3-spool" ] || fail "no prefetch spool in the recovering cluster: prefetching did not run"

step "README's NRPE command: $NRPE"
RC=0; OUT=$(eval "$NRPE") || RC=$?
[ "$RC" = 0 ] && grep -q "^BARMANS3 OK" <<<"$OUT" || fail "check as NRPE runs it: exit $RC: $OUT"

step "the prefetcher, idle once recovery ended, leaves no spool in the restored cluster"
for _ in $(seq 1 90); do [ -e "$BASE/restore/pg_wal/.barmans3-spool" ] || break; sleep 1; done
[ ! -e "$BASE/restore/pg_wal/.barmans3-spool" ] || fail "left in pg_wal: $(find "$BASE/restore/pg_wal/.barmans3-spool")"

step "dpkg --purge barmans3"
rm -f /etc/barmans3/restore.yaml
dpkg --purge barmans3 >/dev/null || fail "dpkg --purge failed"
[ ! -e /usr/bin/barmans3 ] && [ ! -e /var/lib/barmans3 ] && [ ! -e /etc/barmans3 ] || fail "purge left $(ls -d /usr/bin/barmans3 /var/lib/barmans3 /etc/barmans3 2>/dev/null)"

echo "E2E OK: the .deb and the README's walkthrough with $(barman --version 2>&1 | tail -1): backup $ID restored, started as postgres with $ROWS rows; prefix $PREFIX" >&2
