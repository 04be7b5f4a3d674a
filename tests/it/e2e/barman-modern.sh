#!/usr/bin/env bash
# End to end on a current Barman (3.20 from PyPI, or 3.19 where no Python 3.12 exists) with a
# real PostgreSQL 15 and Garage, run by tests/it/barman_e2e.rs as root. What a DBA installing
# today does, and what must restore from the bucket alone:
#   - WAL compression switched between batches of rows: zstd, lz4, bzip2, xz, snappy; one
#     recovery replays all of them;
#   - a point-in-time recovery to a restore point between two batches;
#   - a tar-format gzip backup with a tablespace;
#   - drill of that tar backup with rows after it: passes with every row, nothing left behind;
#   - a config with a model section and an included directory: wal-sync --all and check pass;
#   - a corrupt WAL in the bucket, and the S3 endpoint going away mid-recovery: PostgreSQL
#     stops recovery (no promotion, no new timeline); once the cause is fixed the same data
#     directory recovers fully.
# Needs BARMANS3_BIN, BARMAN (the venv's barman) and the BARMANS3_TEST_S3_* variables. Prints
# "E2E OK" at the end; a failed step exits non-zero with its name. Output is matched with
# here-strings, never `cmd | grep -q` (pipefail and SIGPIPE).
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
SRV=pg
. "$(dirname "$0")/lib.sh"
e2e_base modern
PROXY_PID=

cleanup() {
  set +e
  as_barman "$B terminate-process $SRV receive-wal" >/dev/null 2>&1
  for d in "$BASE"/restore*; do [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl -D $d -m immediate -w stop" >/dev/null 2>&1; done
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -m immediate -w stop" >/dev/null 2>&1
  pkill -u barman -f "pg_receivewal.*$BASE" >/dev/null 2>&1
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  if [ -z "${KEEP_E2E:-}" ]; then rm -rf "$BASE"; else echo "kept $BASE" >&2; fi
}
trap cleanup EXIT

e2e_layout tbs barman.d
VERSION=$(as_barman "$BARMAN --version" | head -1)
step "Barman: $VERSION"

step "PostgreSQL 15 on a socket, port $PORT"
e2e_postgres "" ""

e2e_config modern "  max_attempts: 3
  connect_timeout: 2s
  read_timeout: 10s" ""

write_server() {  # $1: WAL compression; $2: extra backup settings
  e2e_barman_server "" "compression = $1\n$2\n" barman.d
  cat >> "$BASE/barman.d/$SRV.conf" <<EOF

[$SRV:switchover]
model = true
cluster = $SRV
conninfo = host=$BASE/sock port=$PORT user=barman dbname=postgres application_name=switchover
EOF
}
write_server zstd ""
# Barman reads only visible *.conf files of the directory: these must change nothing.
echo "[ghost]" > "$BASE/barman.d/.hidden.conf"; echo "[ghost2]" > "$BASE/barman.d/notes.txt"
chown barman: "$BASE/barman.conf" "$BASE/barman.d"/*
rows() { psql1 "INSERT INTO t SELECT g, md5(g::text) FROM generate_series($1,$2) g; INSERT INTO ts SELECT generate_series($1,$2);"; }

step "tablespace, first batch, barman cron"
psql1 "CREATE TABLESPACE t1 LOCATION '$BASE/tbs'"
psql1 "CREATE TABLE t(id int, v text); CREATE TABLE ts(id int) TABLESPACE t1;"
rows 1 1000
as_barman "$B cron" >/dev/null; sleep 3
e2e_archive_wal

step "backup B1 (plain), WALs zstd; the hook queues, base-sync uploads"
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
ID1=$(basename "$(ls "$BASE/b3/queue"/*.run)" .run)
b3 base-sync
[ -f "$BASE/b3/queue/$ID1.done" ] || fail "B1 not uploaded: $(ls "$BASE/b3/queue")"
b3 wal-sync $SRV

# One batch per compression, the switch taking effect on the next archived WAL.
n=1000
for c in zstd lz4 bzip2 xz snappy; do
  step "batch with WAL compression $c"
  write_server "$c" ""
  as_barman "$B cron" >/dev/null 2>&1 || true
  [ "$c" = xz ] && psql1 "SELECT pg_create_restore_point('before_xz')" >/dev/null
  rows $((n + 1)) $((n + 1000)); n=$((n + 1000))
  e2e_archive_wal
  b3 wal-sync $SRV
done
TOTAL=$n
for c in zstd lz4 bzip2 xz snappy; do
  grep -qP "\t$c(\t|$)" "$BASE/barman/$SRV/wals/$SRV-xlog.db" || fail "no WAL archived with $c: $(cat "$BASE/barman/$SRV/wals/$SRV-xlog.db")"
done

step "model section and included directory: wal-sync --all and check pass"
b3 wal-sync --all
CHECK=$(b3 check) || fail "check: $CHECK"
grep -q "^BARMANS3 OK" <<<"$CHECK" || fail "check not OK: $CHECK"

restore() {  # $1: dir, $2: backup id, $3: config; extra args after
  local dir=$1 id=$2 cfg=$3; shift 3
  rm -rf "$dir" "${dir}_tblspc"; mkdir -p "$dir" "${dir}_tblspc"
  chown postgres: "$dir" "${dir}_tblspc"; chmod 700 "$dir"
  as_pg "$BIN --config $cfg base-restore --recovery $* $SRV $id $dir"
}
start2() { as_pg "$PGBIN/pg_ctl -D $1 -l $BASE/pglog/$(basename "$1").log -o '-p $PORT2 -k $BASE/sock2' -w -t 120 start >/dev/null"; }
promoted() {
  for _ in $(seq 1 60); do
    [ "$(psql2 'SELECT pg_is_in_recovery()' 2>/dev/null)" = "f" ] && return 0; sleep 1
  done
  return 1
}
stop2() { as_pg "$PGBIN/pg_ctl -D $1 -m fast -w stop >/dev/null"; }
count_ok() {  # $1: expected rows in t and ts
  [ "$(psql2 'SELECT count(*), max(id) FROM t')" = "$1|$1" ] || fail "rows in t: $(psql2 'SELECT count(*), max(id) FROM t'), want $1"
  [ "$(psql2 'SELECT count(*) FROM ts')" = "$1" ] || fail "rows in ts: $(psql2 'SELECT count(*) FROM ts'), want $1"
}

step "restore B1 and replay every compression from the bucket alone"
restore "$BASE/restore1" "$ID1" "$BASE/restore.yaml"
start2 "$BASE/restore1" || fail "restored cluster did not start: $(tail -5 "$BASE/pglog/restore1.log")"
promoted || fail "recovery did not finish: $(tail -5 "$BASE/pglog/restore1.log")"
count_ok "$TOTAL"
stop2 "$BASE/restore1"

step "point in time: the restore point before the xz batch"
restore "$BASE/restore2" "$ID1" "$BASE/restore.yaml"
printf "recovery_target_name = 'before_xz'\nrecovery_target_action = 'promote'\n" >> "$BASE/restore2/postgresql.auto.conf"
start2 "$BASE/restore2" || fail "PITR cluster did not start"
promoted || fail "PITR did not finish: $(tail -5 "$BASE/pglog/restore2.log")"
count_ok 4000
stop2 "$BASE/restore2"

step "corrupt WAL in the bucket: recovery stops, no promotion; fixed, it completes"
LAST=$(b3 store ls "$SRV/wals/" | awk '{print $2}' | grep -E '/[0-9A-F]{24}$' | sort | tail -1)
KEY=${LAST#"$PREFIX/"}
b3 store get "$KEY" "$BASE/b3/good.wal"
head -c 3000 "$BASE/b3/good.wal" > "$BASE/b3/bad.wal"; chown barman: "$BASE/b3/bad.wal"
b3 store put "$BASE/b3/bad.wal" "$KEY"
restore "$BASE/restore3" "$ID1" "$BASE/restore.yaml"
refused() {  # $1: data dir. PostgreSQL stopped in archive recovery, on the original timeline.
  for _ in $(seq 1 90); do [ -f "$1/postmaster.pid" ] || break; sleep 1; done
  [ ! -f "$1/postmaster.pid" ] || fail "PostgreSQL still running in $1"
  grep -q "could not restore file" "$BASE/pglog/$(basename "$1").log" || fail "no restore failure in the log: $(tail -5 "$BASE/pglog/$(basename "$1").log")"
  ! grep -q "selected new timeline" "$BASE/pglog/$(basename "$1").log" || fail "a new timeline was selected"
  ls "$1/pg_wal"/*.history >/dev/null 2>&1 && fail "a timeline history file was written"
  [ -f "$1/recovery.signal" ] || fail "recovery.signal is gone: recovery ended"
  grep -q "in archive recovery" <<<"$("$PGBIN/pg_controldata" "$1")" || fail "cluster state: $("$PGBIN/pg_controldata" "$1" | grep state)"
}
# pg_ctl may report the start (hot standby accepts connections) before recovery reaches the
# bad file: what counts is that the server then stops instead of promoting.
start2 "$BASE/restore3" || true
refused "$BASE/restore3"
b3 store put "$BASE/b3/good.wal" "$KEY"
start2 "$BASE/restore3" || fail "fixed cluster did not start: $(tail -5 "$BASE/pglog/restore3.log")"
promoted || fail "recovery after the fix did not finish"
count_ok "$TOTAL"
stop2 "$BASE/restore3"

step "the S3 endpoint goes away mid-recovery: recovery stops; back again, it completes"
GATE_PORT=$(free_port)
echo 6 > "$BASE/gate"
python3 - "$GATE_PORT" "${BARMANS3_TEST_S3_ENDPOINT#http://}" "$BASE/gate" <<'PY' &
# A gate in front of the S3 server: forwards connections while the budget in the gate file
# lasts ("open": no limit), then accepts and drops them, like an endpoint that went away.
import socket, sys, threading
port, upstream, gate = int(sys.argv[1]), sys.argv[2], sys.argv[3]
host, uport = upstream.split(":")
def pipe(a, b):
    try:
        while (d := a.recv(65536)):
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(64)
while True:
    c, _ = srv.accept()
    budget = open(gate).read().strip()
    if budget != "open":
        n = int(budget)
        if n <= 0:
            c.close(); continue
        open(gate, "w").write(str(n - 1))
    u = socket.create_connection((host, int(uport)))
    for a, b in ((c, u), (u, c)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
PY
PROXY_PID=$!
sed "s#endpoint: $BARMANS3_TEST_S3_ENDPOINT#endpoint: http://127.0.0.1:$GATE_PORT#" "$BASE/restore.yaml" > "$BASE/gated.yaml"
chown postgres: "$BASE/gated.yaml" "$BASE/gate"; chmod 600 "$BASE/gated.yaml"; chmod 666 "$BASE/gate"
restore "$BASE/restore4" "$ID1" "$BASE/restore.yaml"
sed -i "s#--config $BASE/restore.yaml#--config $BASE/gated.yaml#" "$BASE/restore4/postgresql.auto.conf"
grep -q "gated.yaml" "$BASE/restore4/postgresql.auto.conf" || fail "restore_command not redirected"
start2 "$BASE/restore4" || true
refused "$BASE/restore4"
echo open > "$BASE/gate"
start2 "$BASE/restore4" || fail "cluster did not start once the endpoint was back: $(tail -5 "$BASE/pglog/restore4.log")"
promoted || fail "recovery did not finish once the endpoint was back"
count_ok "$TOTAL"
stop2 "$BASE/restore4"

step "backup B2: tar format, gzip, with the tablespace"
write_server snappy "backup_compression = gzip
backup_compression_format = tar"
sleep 1
as_barman "$B backup --wait --wait-timeout 120 $SRV" >/dev/null
b3 base-sync
b3 wal-sync $SRV
ID2=$(ls "$BASE/b3/queue" | grep '\.done$' | grep -v "^$ID1" | sed 's/\.done$//')
[ -n "$ID2" ] || fail "B2 not uploaded: $(ls "$BASE/b3/queue")"
OBJECTS=$(b3 store ls "$SRV/base/$ID2/")
grep -q "/base/$ID2/data/base.tar.gz" <<<"$OBJECTS" || fail "B2 is not a tar backup: $OBJECTS"
OID=$(grep -oE "/base/$ID2/data/[0-9]+\.tar\.gz" <<<"$OBJECTS" | head -1 | sed -E 's#.*/([0-9]+)\.tar\.gz#\1#')
[ -n "$OID" ] || fail "no tablespace archive in B2: $OBJECTS"
mkdir -p "$BASE/restore5_tbs"; chown postgres: "$BASE/restore5_tbs"
restore "$BASE/restore5" "$ID2" "$BASE/restore.yaml" --tablespace "$OID=$BASE/restore5_tbs/$OID"
[ "$(readlink "$BASE/restore5/pg_tblspc/$OID")" = "$BASE/restore5_tbs/$OID" ] || fail "tablespace link not relocated"
[ ! -e "$BASE/restore5/tablespace_map" ] || fail "tablespace_map restored (PostgreSQL would relink the old place)"
grep -Eq "barmans3-wal-restore.* $SRV %f %p" <<<"$(tail -5 "$BASE/restore5/postgresql.auto.conf")" || fail "restore_command is not last"
start2 "$BASE/restore5" || fail "tar restore did not start: $(tail -5 "$BASE/pglog/restore5.log")"
promoted || fail "tar restore recovery did not finish"
count_ok "$TOTAL"
stop2 "$BASE/restore5"

step "rows after B2; drill of B2 (tar, gzip, a tablespace): restored, replayed, checked, nothing left"
rows $((TOTAL + 1)) $((TOTAL + 1000))
e2e_archive_wal
b3 wal-sync $SRV
e2e_drill modern "$ID2" "$((TOTAL + 1000))" off

echo "E2E OK: $VERSION; B1 $ID1 (plain, WALs zstd lz4 bzip2 xz snappy, PITR, corrupt WAL, endpoint gone), B2 $ID2 (tar gzip, tablespace $OID), prefix $PREFIX" >&2
