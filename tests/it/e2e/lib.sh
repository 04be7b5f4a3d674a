# Shared by the end-to-end scripts (sourced, not run): a scratch directory, free ports, the
# users PostgreSQL and Barman run as, step/failure messages, and the set-up every script starts
# with (directories, a PostgreSQL primary, barmans3's config). The caller sets PGBIN first.

# e2e_base NAME: BASE, a fresh directory every user can enter; PORT and PORT2, free ports.
e2e_base() {
  BASE=$(mktemp -d "/tmp/barmans3-$1.XXXXXX")
  chmod 755 "$BASE"
  PORT=$(free_port); PORT2=$(free_port)
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
step() { echo "== $*" >&2; }
fail() { echo "E2E FAILED: $*" >&2; exit 1; }
as_pg() { su postgres -s /bin/bash -c "$*"; }
as_barman() { su barman -s /bin/bash -c "$*"; }
psql1() { as_pg "$PGBIN/psql -h $BASE/sock -p $PORT -d postgres -Atqc \"$1\""; }
psql2() { as_pg "$PGBIN/psql -h $BASE/sock2 -p $PORT2 -d postgres -Atqc \"$1\""; }
b3() { as_barman "$BIN --config $CFG $*"; }

# e2e_layout "PG_DIRS" "BARMAN_DIRS": the scratch tree under BASE. pgdata, pglog, sock and sock2
# (and PG_DIRS) belong to postgres; barman, log and b3 (and BARMAN_DIRS) to barman. BIN is a copy
# of barmans3 both users can run, with the lean restore_command beside it as the package installs
# it (BARMANS3_LEAN_BIN).
e2e_layout() {
  local d
  mkdir -p "$BASE/bin"
  install -m 755 "$BARMANS3_BIN" "$BASE/bin/barmans3"
  install -m 755 "${BARMANS3_LEAN_BIN:?the lean program to install beside barmans3}" "$BASE/bin/barmans3-wal-restore"
  BIN=$BASE/bin/barmans3
  for d in pgdata pglog sock sock2 $1; do mkdir -p "$BASE/$d"; chown postgres: "$BASE/$d"; done
  for d in barman log b3 $2; do mkdir -p "$BASE/$d"; chown barman: "$BASE/$d"; done
}

# e2e_postgres "INITDB_OPTIONS" "MORE_CONF": a primary in BASE/pgdata on the socket BASE/sock,
# port PORT, with the roles Barman connects as. MORE_CONF: postgresql.conf lines, each ending
# in \n.
e2e_postgres() {
  as_pg "$PGBIN/initdb -D $BASE/pgdata -A trust -U postgres $1 >/dev/null"
  printf "listen_addresses = ''\nport = $PORT\nunix_socket_directories = '$BASE/sock'\nwal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n%b" "$2" >> "$BASE/pgdata/postgresql.conf"
  as_pg "$PGBIN/pg_ctl -D $BASE/pgdata -l $BASE/pglog/pg.log -w start >/dev/null"
  psql1 "CREATE ROLE barman SUPERUSER LOGIN; CREATE ROLE streaming_barman REPLICATION LOGIN;"
}

# e2e_config NAME "MORE_S3" "MORE_BARMAN": barmans3's config for the running Garage under a fresh
# PREFIX (NAME-...), as CFG for the barman user and BASE/restore.yaml for postgres (the restore
# side reads the bucket with its own copy). The extra lines are YAML, indented two spaces.
e2e_config() {
  PREFIX="$1-$(date +%s)-$RANDOM"
  CFG=$BASE/b3/barmans3.yaml
  cat > "$CFG" <<EOC
s3:
  endpoint: $BARMANS3_TEST_S3_ENDPOINT
  region: garage
  bucket: $BARMANS3_TEST_S3_BUCKET
  prefix: $PREFIX
  access_key_id: $BARMANS3_TEST_S3_ACCESS_KEY_ID
  secret_access_key: $BARMANS3_TEST_S3_SECRET_ACCESS_KEY
  part_size: 5MiB
$2
state:
  dir: $BASE/b3/state
  queue_dir: $BASE/b3/queue
barman:
  config: $BASE/barman.conf
$3
EOC
  chown barman:barman "$CFG"; chmod 600 "$CFG"
  install -o postgres -g postgres -m 600 "$CFG" "$BASE/restore.yaml"
}

# e2e_barman_server "BARMAN_LINES" "SERVER_LINES" [DIR]: Barman's configuration for the primary
# of e2e_postgres: BASE/barman.conf with BARMAN_LINES in [barman], and the server SRV (streaming
# backups and WAL from PORT, immediate checkpoints, the hook that queues each backup for
# barmans3's CFG) with SERVER_LINES; in barman.conf, or given DIR (a directory under BASE) in
# DIR/SRV.conf, which a second call rewrites. Lines end in \n. Both files are barman's. Sets B,
# the barman command (BARMAN, else Debian's).
e2e_barman_server() {
  local conf=$BASE/barman.conf
  {
    printf '[barman]\nbarman_user = barman\nbarman_home = %s\nlog_file = %s\n' "$BASE/barman" "$BASE/log/barman.log"
    if [ -n "${3:-}" ]; then printf 'configuration_files_directory = %s\n' "$BASE/$3"; fi
    printf '%b' "$1"
  } > "$conf"
  if [ -n "${3:-}" ]; then conf=$BASE/$3/$SRV.conf; : > "$conf"; fi
  cat >> "$conf" <<EOS
[$SRV]
conninfo = host=$BASE/sock port=$PORT user=barman dbname=postgres
streaming_conninfo = host=$BASE/sock port=$PORT user=streaming_barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
create_slot = auto
path_prefix = $PGBIN
immediate_checkpoint = true
post_backup_retry_script = $BIN --config $CFG queue-add
EOS
  printf '%b' "$2" >> "$conf"
  chown barman: "$BASE/barman.conf" "$conf"
  B="${BARMAN:-/usr/bin/barman} -c $BASE/barman.conf"
}

# e2e_archive_wal: a WAL switch Barman waits to see archived (once more after a cron when the
# first try finds the archiver not started yet).
e2e_archive_wal() {
  as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null 2>&1 \
    || { as_barman "$B cron" >/dev/null 2>&1; sleep 2; as_barman "$B switch-wal --force --archive --archive-timeout 60 $SRV" >/dev/null; }
}

# e2e_drill NAME ID ROWS CHECKSUMS [drill options]: a drill of SRV's newest backup as postgres
# with BASE/restore.yaml into BASE/drills/NAME: exit 0, backup ID, `SELECT count(*) FROM t` is
# ROWS, data checksums CHECKSUMS (verified or off), amcheck passed; and nothing left behind: no
# DEST, no process naming it (so no PostgreSQL on its port).
e2e_drill() {
  local name=$1 id=$2 rows=$3 sums=$4 rc=0; shift 4
  install -d -o postgres -g postgres -m 700 "$BASE/drills"
  as_pg "$BIN --config $BASE/restore.yaml --json drill $SRV --dest $BASE/drills/$name --query 'SELECT count(*) FROM t' $* >$BASE/drills/$name.json 2>$BASE/drills/$name.err" || rc=$?
  cat "$BASE/drills/$name.err" >&2
  [ "$rc" = 0 ] || fail "drill $name: exit $rc: $(tail -3 "$BASE/drills/$name.err")"
  python3 - "$BASE/drills/$name.json" "$id" "$rows" "$sums" <<'PY' || fail "drill $name: report $(cat "$BASE/drills/$name.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["success"] is True and r["backup_id"] == sys.argv[2], r
assert [q["first_value"] for q in r["queries"]] == [sys.argv[3]], r["queries"]
assert r["data_checksums"] == sys.argv[4] and r["amcheck"] == "passed", r
assert r["segments_replayed"] >= 1 and r["restorable_up_to"], r
PY
  [ ! -e "$BASE/drills/$name" ] || fail "drill $name left DEST behind: $(ls -la "$BASE/drills/$name")"
  ! pgrep -f -- "$BASE/drills/$name" >/dev/null || fail "drill $name left a process: $(pgrep -af -- "$BASE/drills/$name")"
}
