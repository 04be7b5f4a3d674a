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
# of barmans3 both users can run.
e2e_layout() {
  local d
  mkdir -p "$BASE/bin"
  install -m 755 "$BARMANS3_BIN" "$BASE/bin/barmans3"
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
