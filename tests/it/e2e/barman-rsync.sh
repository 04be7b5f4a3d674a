#!/usr/bin/env bash
# End to end for Barman's rsync backups with reuse_backup = link, run by tests/it/barman_e2e.rs
# as root: PostgreSQL 15, a current Barman, and an sshd on 127.0.0.1 (random port, keys made
# here) through which the barman user reaches the postgres user, as on a real Barman host.
#   - two backups with a small change between them; Barman hard-links the unchanged files;
#   - base-sync sends only the files that are not links to the first backup: the rest are
#     server-side copies (asserted from the run's counters against the backup's own inodes);
#   - both backups restore byte-identical to Barman's copies, and the second starts with the
#     right rows after WAL replay.
# Needs BARMANS3_BIN, BARMAN (a venv barman) and the BARMANS3_TEST_S3_* variables. Prints
# "E2E OK" at the end.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base rsync
SSHPORT=$(free_port)
B="$BARMAN -c $BASE/barman.conf"

cleanup() {
  set +e
  as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1
  for d in "$BASE"/pghome/*; do [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1; done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  [ -f "$BASE/ssh/sshd.pid" ] && kill "$(cat "$BASE/ssh/sshd.pid")" 2>/dev/null
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout pghome barman-ssh
mkdir -p "$BASE/ssh"
step "$(as_barman "$BARMAN --version" | head -1); sshd on 127.0.0.1:$SSHPORT"

# sshd: host key and config of its own; barman's key may log in as postgres. With PAM, sshd
# accepts the postgres account, whose password is locked as Debian installs it.
ssh-keygen -q -t ed25519 -N '' -f "$BASE/ssh/host_key"
as_barman "ssh-keygen -q -t ed25519 -N '' -f $BASE/barman-ssh/id"
install -m 644 "$BASE/barman-ssh/id.pub" "$BASE/ssh/authorized_keys_postgres"
cat > "$BASE/ssh/sshd_config" <<EOF
Port $SSHPORT
ListenAddress 127.0.0.1
HostKey $BASE/ssh/host_key
PidFile $BASE/ssh/sshd.pid
AuthorizedKeysFile $BASE/ssh/authorized_keys_%u
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
AllowUsers postgres
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -f "$BASE/ssh/sshd_config" -E "$BASE/ssh/sshd.log" || fail "sshd did not start: $(cat "$BASE/ssh/sshd.log")"
SSH="ssh -p $SSHPORT -i $BASE/barman-ssh/id -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR postgres@127.0.0.1"
[ "$(as_barman "$SSH whoami")" = postgres ] || fail "barman cannot reach postgres over ssh: $(tail -3 "$BASE/ssh/sshd.log")"

e2e_postgres "" ""

e2e_config rsync "" ""

cat > "$BASE/barman.conf" <<EOF
[barman]
barman_user = barman
barman_home = $BASE/barman
log_file = $BASE/log/barman.log
[$SRV]
conninfo = host=$BASE/sock port=$PORT user=barman dbname=postgres
streaming_conninfo = host=$BASE/sock port=$PORT user=streaming_barman
ssh_command = $SSH
backup_method = rsync
reuse_backup = link
backup_options = concurrent_backup
streaming_archiver = on
slot_name = barman
create_slot = auto
path_prefix = $PGBIN
immediate_checkpoint = true
post_backup_retry_script = $BIN --config $CFG queue-add
EOF
chown barman: "$BASE/barman.conf"
B="$BARMAN -c $BASE/barman.conf"
switch_wal() { as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null; }

step "first rsync backup: a big table and a small one"
psql1 "CREATE TABLE big(id int, v text); CREATE TABLE small(id int)"
psql1 "INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 60000) g; INSERT INTO small VALUES (1)"
psql1 "CHECKPOINT"
as_barman "$B cron" >/dev/null; sleep 3
switch_wal
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null || fail "first backup: $(tail -5 "$BASE/log/barman.log")"
FIRST=$(ls "$BASE/b3/queue" | sed -n 's/\.run$//p')
[ -n "$FIRST" ] || fail "the first backup was not queued"
b3 base-sync
[ -f "$BASE/b3/queue/$FIRST.done" ] || fail "first backup not uploaded: $(cat "$BASE/b3/queue/$FIRST".*)"

step "second backup after a small change: Barman links what did not change"
psql1 "INSERT INTO small SELECT generate_series(2, 500)"
psql1 "CHECKPOINT"
sleep 1
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null || fail "second backup: $(tail -5 "$BASE/log/barman.log")"
SECOND=$(ls "$BASE/b3/queue" | sed -n 's/\.run$//p')
[ -n "$SECOND" ] || fail "the second backup was not queued"
# What Barman linked and what it wrote anew, from the backup's own inodes.
read -r LINKED NEW < <(python3 - "$BASE/barman/$SRV/base/$FIRST" "$BASE/barman/$SRV/base/$SECOND" <<'PY'
import os, sys
a, b = sys.argv[1], sys.argv[2]
linked = new = 0
for root, _, files in os.walk(b):
    for f in files:
        p = os.path.join(root, f)
        rel = os.path.relpath(p, b)
        if rel == "backup.info":
            continue
        st = os.lstat(p)
        q = os.path.join(a, rel)
        if os.path.exists(q) and os.lstat(q).st_ino == st.st_ino:
            linked += st.st_size
        else:
            new += st.st_size
print(linked, new)
PY
)
step "linked $LINKED bytes, new $NEW bytes"
[ "$LINKED" -gt $((8 << 20)) ] || fail "Barman linked only $LINKED bytes: not a reuse_backup = link backup"
SUMMARY=$(b3 --json base-sync | tail -1)

UP=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes_up"])' "$SUMMARY")
COPIED=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["bytes_copied"])' "$SUMMARY")
step "second base-sync: $UP bytes sent, $COPIED copied server-side"
[ -f "$BASE/b3/queue/$SECOND.done" ] || fail "second backup not uploaded"
[ "$COPIED" -ge "$LINKED" ] || fail "copied $COPIED < linked $LINKED: a linked file was uploaded"
[ "$UP" -le $((NEW + (256 << 10))) ] || fail "sent $UP bytes, but only $NEW bytes are new (+ manifest, backup.info)"
switch_wal
b3 wal-sync $SRV

step "both backups restore byte-identical from the bucket"
for id in "$FIRST" "$SECOND"; do
  as_pg "$BIN --config $BASE/restore.yaml base-restore $SRV $id $BASE/pghome/$id" >/dev/null
  diff -r "$BASE/barman/$SRV/base/$id/data" "$BASE/pghome/$id" >/dev/null \
    || fail "restore of $id differs: $(diff -rq "$BASE/barman/$SRV/base/$id/data" "$BASE/pghome/$id" | head -3)"
done

step "the second backup starts and replays to the rows it had"
as_pg "$BIN --config $BASE/restore.yaml base-restore --recovery $SRV $SECOND $BASE/pghome/run"
as_pg "$PGBIN/pg_ctl -D $BASE/pghome/run -l $BASE/pglog/run.log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null" \
  || fail "restored cluster did not start: $(tail -5 "$BASE/pglog/run.log")"
for _ in $(seq 1 60); do [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 1; done
[ "$(psql2 'SELECT count(*) FROM small')|$(psql2 'SELECT count(*) FROM big')" = "500|60000" ] \
  || fail "rows: $(psql2 'SELECT count(*) FROM small')|$(psql2 'SELECT count(*) FROM big')"
as_pg "$PGBIN/pg_ctl -D $BASE/pghome/run -m fast -w stop >/dev/null"
echo "E2E OK" >&2
