"""The pgbackrest case: barmans3 head to head with pgBackRest (Debian's 2.45), both on the same
Garage through one TLS terminator (stunnel4, a self-signed certificate each tool trusts through
its CA setting: pgBackRest 2.45 speaks only HTTPS to S3). A PostgreSQL 15 cluster generated with
pgbench (about 2 GiB at the default scale) archives every segment to both (pgBackRest's
archive-push; a copy into Barman's incoming directory); then BENCH_PGBR_WALS segments of new
rows.

- Upload side, reported apart: Barman's backup (postgres method) then `base-sync` and `wal-sync`
  against `pgbackrest backup --type=full`.
- Restore side: from an empty directory to a started server that replayed every segment (the
  last segment's rows are checked): `base-restore --recovery` (its `restore_command` is
  `wal-restore` with prefetch, the default 8) against `pgbackrest restore` with async
  `archive-get`; process-max = the core count; no compression on either side (Barman's
  `compression` off, pgBackRest `compress-type=none`, BENCH_PGBR_COMPRESS to change).

Everything runs as postgres in a scratch directory under BENCH_DIR, removed at the end.
BENCH_PGBR_SCALE (pgbench scale, default 135) and BENCH_PGBR_WALS (default 100) make it small
for a check of the case."""

import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

SCALE = int(os.environ.get("BENCH_PGBR_SCALE", "135"))
WALS = int(os.environ.get("BENCH_PGBR_WALS", "100"))
COMPRESS = os.environ.get("BENCH_PGBR_COMPRESS", "none")
# Rows of about 300 bytes: one segment of WAL per insert and switch.
ROWS_PER_WAL = 40000
PGBIN = Path("/usr/lib/postgresql/15/bin")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(b, base):
    """The scratch tree, the TLS terminator and both tools' configs; returns stunnel's pid file.
    Both tools name the terminator `localhost` (pgBackRest 2.45 checks a certificate's host names,
    not its IP addresses); stunnel listens on 127.0.0.1."""
    for d in ("bin", "sock", "sock2", "log", "lock", "tls", "b3", "barman/pg/incoming"):
        (base / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(b.B3, base / "bin/barmans3")
    tls = base / "tls"
    # A CA of our own and the terminator's certificate signed by it (rustls refuses a CA
    # certificate as a server's own).
    (tls / "leaf.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    for cmd in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=barmans3 bench CA", "-keyout", tls / "ca.key", "-out", tls / "ca.pem"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", tls / "key.pem", "-out", tls / "leaf.csr"],
        ["x509", "-req", "-in", tls / "leaf.csr", "-CA", tls / "ca.pem", "-CAkey", tls / "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", tls / "leaf.ext", "-out", tls / "cert.pem"],
    ):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    tls_port = free_port()
    upstream = b.EP.removeprefix("http://")
    (tls / "stunnel.conf").write_text(
        f"foreground = no\npid = {tls}/stunnel.pid\noutput = {base}/log/stunnel.log\n"
        f"[s3]\naccept = 127.0.0.1:{tls_port}\nconnect = {upstream}\ncert = {tls}/cert.pem\nkey = {tls}/key.pem\n"
    )
    port, port2 = free_port(), free_port()
    cores = os.cpu_count() or 1
    (base / "pgbackrest.conf").write_text(
        "[global]\nrepo1-type=s3\nrepo1-path=/bench/pgbackrest-repo\n"
        f"repo1-s3-bucket={b.BUCKET}\nrepo1-s3-endpoint=localhost\nrepo1-storage-port={tls_port}\n"
        f"repo1-storage-ca-file={tls}/ca.pem\nrepo1-s3-region={b.REGION}\nrepo1-s3-key={b.AK}\n"
        f"repo1-s3-key-secret={b.SK}\nrepo1-s3-uri-style=path\nrepo1-retention-full=1\n"
        f"process-max={cores}\ncompress-type={COMPRESS}\narchive-async=y\nspool-path={base}/spool\n"
        f"log-path={base}/log\nlock-path={base}/lock\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\n"
        f"[bench]\npg1-path={base}/pgdata\npg1-port={port}\npg1-socket-path={base}/sock\n"
    )
    (base / "barman.conf").write_text(
        f"[barman]\nbarman_user = postgres\nbarman_home = {base}/barman\nlog_file = {base}/log/barman.log\n"
        f"[pg]\nconninfo = host={base}/sock port={port} user=postgres dbname=postgres\n"
        f"streaming_conninfo = host={base}/sock port={port} user=postgres\nbackup_method = postgres\n"
        f"archiver = on\nincoming_wals_directory = {base}/barman/pg/incoming\npath_prefix = {PGBIN}\n"
        f"immediate_checkpoint = true\npost_backup_script = {base}/bin/barmans3 --config {base}/barmans3.yaml queue-add\n"
    )
    (base / "barmans3.yaml").write_text(
        f"s3:\n  endpoint: https://localhost:{tls_port}\n  ca_bundle: {tls}/ca.pem\n  region: {b.REGION}\n"
        f"  bucket: {b.BUCKET}\n  prefix: bench/pgbackrest-b3\n  access_key_id: {b.AK}\n  secret_access_key: {b.SK}\n"
        f"state:\n  dir: {base}/b3/state\n  queue_dir: {base}/b3/queue\nbarman:\n  config: {base}/barman.conf\n"
    )
    (base / "env").write_text(
        f"BASE={base}\nPORT={port}\nPORT2={port2}\nSCALE={SCALE}\nWALS={WALS}\nROWS_PER_WAL={ROWS_PER_WAL}\n"
        f"REPEATS={b.REPEATS}\n"
    )
    subprocess.run(["chown", "-R", "postgres:postgres", base], check=True)
    for f in ("pgbackrest.conf", "barmans3.yaml", "tls/key.pem", "tls/ca.key"):
        os.chmod(base / f, 0o600)
    subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", f"stunnel4 {tls}/stunnel.conf"], check=True)
    return tls / "stunnel.pid"


def run(b, e, data):
    missing = [t for t in ("pgbackrest", "stunnel4", "barman", "openssl") if not shutil.which(t)]
    if missing or not (PGBIN / "initdb").exists():
        raise RuntimeError(f"the pgbackrest case needs {', '.join(missing) or 'PostgreSQL 15'}: apt-get install pgbackrest stunnel4 barman postgresql-15")
    base = Path(tempfile.mkdtemp(dir=b.D, prefix="pgbackrest."))
    base.chmod(0o755)
    pid = None
    try:
        pid = setup(b, base)
        script = Path(__file__).with_name("pgbackrest.sh").read_text()
        b.log(f"pgbackrest case in {base} (scale {SCALE}, {WALS} WALs)")
        r = subprocess.run(["su", "postgres", "-s", "/bin/bash", "-c", f"BASE={base} bash -s"], input=script,
                           text=True, capture_output=True)
        for line in r.stderr.splitlines():
            b.log(line)
        if r.returncode != 0:
            raise RuntimeError(f"pgbackrest case failed ({r.returncode}): {r.stderr[-2000:]}")
        times = {}
        for m in re.finditer(r"^TIME (\S+) (\S+)$", r.stdout, re.M):
            times.setdefault(m.group(1), []).append(float(m.group(2)))
        b.log(f"pgbackrest case: {times}")
        return report(times)
    finally:
        if pid and pid.exists():
            subprocess.run(["kill", pid.read_text().strip()], check=False)
        for d in ("pgdata", "restore"):
            if (base / d / "postmaster.pid").exists():
                subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", f"{PGBIN}/pg_ctl -D {base}/{d} -m immediate -w stop"],
                               check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        b.cleanup(e.env, "bench/pgbackrest-b3")
        b.cleanup(e.env, "bench/pgbackrest-repo")


def report(times):
    med = {k: statistics.median(v) for k, v in times.items()}
    size = f"pgbench scale {SCALE}, {WALS} WAL segments"
    lines = [
        "",
        f"pgbackrest: barmans3 against pgBackRest 2.45 on the same Garage through one TLS terminator (stunnel4);",
        f"a PostgreSQL 15 cluster ({size}); process-max = {os.cpu_count()}, async archive-get, compression {COMPRESS}.",
        "",
        "Restore: from an empty directory to a started server that replayed every segment (s per repeat):",
        "",
        "| tool | wall s per repeat | median |",
        "|---|---|---|",
    ]
    for tool, key in (("barmans3 base-restore + wal-restore (prefetch)", "restore_barmans3"),
                      ("pgbackrest restore + archive-get (async)", "restore_pgbackrest")):
        if key in times:
            lines.append(f"| {tool} | {' / '.join(f'{t:.1f}' for t in times[key])} | {med[key]:.1f} |")
    if "restore_barmans3" in med and "restore_pgbackrest" in med:
        lines += ["", f"Restore ratio (pgBackRest / barmans3): {med['restore_pgbackrest'] / med['restore_barmans3']:.2f}"]
    up_b3 = med.get("barman_backup", 0) + med.get("barmans3_base_sync", 0)
    lines += [
        "",
        "Upload side, apart (s): Barman's backup, then barmans3 base-sync + wal-sync of it; pgbackrest backup;",
        "and barmans3 wal-sync of the new segments (pgBackRest pushed them as they were archived):",
        "",
        "| step | s |",
        "|---|---|",
        f"| Barman backup (postgres method) | {med.get('barman_backup', 0):.1f} |",
        f"| barmans3 base-sync + wal-sync | {med.get('barmans3_base_sync', 0):.1f} |",
        f"| Barman + barmans3 | {up_b3:.1f} |",
        f"| pgbackrest backup --type=full | {med.get('pgbackrest_backup', 0):.1f} |",
        f"| barmans3 wal-sync of the {WALS} segments | {med.get('barmans3_wal_sync', 0):.1f} |",
    ]
    return "\n".join(lines)
