# Shared by the end-to-end scripts (sourced, not run): a scratch directory, free ports, the
# users PostgreSQL and Barman run as, and step/failure messages. The caller sets PGBIN first.

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
