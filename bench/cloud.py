"""The barman-cloud cases: buckets in the layout Barman's own cloud tools write, read by barmans3
(--layout barman-cloud) and by Barman's readers.

- "cloudrestore" (barman-cloud restore): the 2 GiB backup uploaded as barman-cloud-backup does
  (Barman's own CloudUploadController, the code barman-cloud-backup runs, snappy-compressed
  tar archives), restored by barmans3 base-restore --layout barman-cloud and by
  barman-cloud-restore.
- "cloudreplay" (barman-cloud WAL replay): the replay case's segments archived by
  barman-cloud-wal-archive --gzip, fetched one restore_command at a time by barmans3 (prefetch 8)
  and barman-cloud-wal-restore without and with -p 8, on loopback and with 20 ms added.
"""

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

# Barman's uploader, run in the venv that has barman[cloud]: the archives of one backup and
# its backup.info, in barman-cloud's layout.
UPLOAD = r'''
import io, os, sys
from barman.cloud import CloudUploadController
from barman.cloud_providers.aws_s3 import S3CloudInterface
url, endpoint, server, backup_id, src, compression = sys.argv[1:7]
ci = S3CloudInterface(url, jobs=4, endpoint_url=endpoint)
prefix = os.path.join(ci.path, server, "base", backup_id)
c = CloudUploadController(ci, prefix, 1 << 40, compression, 100 << 20, None)
c.upload_directory("pgdata", src, "data", exclude=["/global/pg_control"])
c.add_file("pg_control", os.path.join(src, "global/pg_control"), "data", "global/pg_control")
c.close()
info = ("backup_id=%s\nstatus=DONE\nbegin_wal=000000010000000000000001\n"
        "end_wal=000000010000000000000001\nversion=150000\ntimeline=1\n" % backup_id)
ci.upload_fileobj(io.BytesIO(info.encode()), os.path.join(prefix, "backup.info"))
ci.close()
'''

REPLAY_TOOLS = [
    ("barmans3 (prefetch 8)", 8),
    ("barman-cloud-wal-restore", None),
    ("barman-cloud-wal-restore -p 8", 8),
]


def ensure_barman_cloud(b):
    # The snappy module too: the replay case may have installed barman[cloud] without it.
    has_snappy = subprocess.run([b.VENV / "bin/python", "-c", "import snappy"], capture_output=True).returncode == 0
    if not (b.VENV / "bin/barman-cloud-wal-restore").exists() or not has_snappy:
        b.log("installing barman[cloud] and python-snappy (PyPI) into the bench venv")
        subprocess.run([b.VENV / "bin/pip", "install", "-q", "barman[cloud]", "python-snappy"], check=True)


def upload_backup(b, e, src, prefix, backup_id, compression="snappy"):
    """Uploads directory `src` as backup `backup_id` of server pg under `prefix`."""
    ensure_barman_cloud(b)
    url = f"s3://{b.BUCKET}/{prefix}"
    subprocess.run([b.VENV / "bin/python", "-c", UPLOAD, url, b.EP, "pg", backup_id, src, compression], env=e.env, check=True)


def restore(b, e, data):
    """The 2 GiB backup restored by barmans3 and by barman-cloud-restore."""
    src = data / f"backup/barman/pg/base/{b.ID}/data"
    size = b.tree_bytes(src)
    b.log("uploading the 2 GiB backup in barman-cloud's layout (Barman's uploader, snappy)")
    upload_backup(b, e, src, "bench/cloud", b.ID)
    out = {}
    for rep in range(b.REPEATS):
        for tool in ["barmans3 base-restore", "barman-cloud-restore"]:
            dest = Path(tempfile.mkdtemp(dir=e.tmp, prefix="cloudrestore."))
            if tool.startswith("barman-cloud"):
                cmd = [b.VENV / "bin/barman-cloud-restore", "--endpoint-url", b.EP, f"s3://{b.BUCKET}/bench/cloud", "pg", b.ID, dest]
            else:
                shutil.rmtree(dest)
                cfg = e.b3_config("bench/cloud", data / "backup/barman")
                cmd = [b.B3, "--config", cfg, "--json", "base-restore", "--layout", "barman-cloud", "pg", b.ID, dest]
            # Each run starts with nothing of the last one waiting to be written back.
            subprocess.run(["sync"], check=True)
            wall, cpu, rss, _ = b.measure(cmd, e.env)
            b.log(f"cloudrestore {tool:24} rep {rep}: {wall:.2f}s cpu {cpu:.2f}s rss {rss // 1024} MiB")
            out.setdefault(tool, []).append((wall, cpu, rss, size))
            if tool.startswith("barman-cloud"):
                # barman-cloud-restore exits with its files still in the page cache; barmans3
                # has them on disk (it syncs before pg_control goes into place). The same
                # guarantee costs the peer a sync of the destination's filesystem.
                t0 = time.monotonic()
                subprocess.run(["sync", "-f", dest], check=True)
                synced = wall + time.monotonic() - t0
                b.log(f"cloudrestore {tool + ' + sync':24} rep {rep}: {synced:.2f}s")
                out.setdefault(tool + " + sync", []).append((synced, cpu, rss, size))
            shutil.rmtree(dest, ignore_errors=True)
    return out


def restore_report(b, rows):
    lines = [
        "",
        "barman-cloud restore: the 2 GiB backup in barman-cloud's layout (snappy tar archives written by",
        "Barman's uploader), restored by barmans3 base-restore --layout barman-cloud and by",
        "barman-cloud-restore (target: barmans3 ≥ 3× faster):",
        "",
        "| tool | wall s (min / median / max) | MiB/s | CPU s per GiB | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    med = {}
    for tool, runs in rows.items():
        walls = [r[0] for r in runs]
        m = statistics.median(walls)
        size = runs[0][3]
        med[tool] = m
        cpu = statistics.median(r[1] for r in runs) / (size / b.GIB)
        lines.append(f"| {tool} | {min(walls):.2f} / {m:.2f} / {max(walls):.2f} | {size / (1 << 20) / m:.0f} | {cpu:.2f} | {max(r[2] for r in runs) // 1024} |")
    if med.get("barmans3 base-restore") and med.get("barman-cloud-restore"):
        lines += ["", f"Speed ratio (barman-cloud-restore wall / barmans3 wall): {med['barman-cloud-restore'] / med['barmans3 base-restore']:.2f}"]
    if med.get("barmans3 base-restore") and med.get("barman-cloud-restore + sync"):
        lines += [f"Speed ratio with the data on disk for both (barman-cloud-restore + sync / barmans3): {med['barman-cloud-restore + sync'] / med['barmans3 base-restore']:.2f}"]
    return "\n".join(lines)


def archive_wals(b, e, data):
    """The replay segments archived by barman-cloud-wal-archive --gzip under bench/cloudwal."""
    ensure_barman_cloud(b)
    wals = sorted(p for p in (data / "replay/barman/pg/wals").rglob("*") if p.is_file() and len(p.name) == 24)
    b.log(f"archiving {len(wals)} WALs with barman-cloud-wal-archive --gzip")
    for w in wals:
        subprocess.run([b.VENV / "bin/barman-cloud-wal-archive", "--endpoint-url", b.EP, "--gzip", f"s3://{b.BUCKET}/bench/cloudwal", "pg", w], env=e.env, check=True)


def replay_once(b, e, data, endpoint, tool, depth, names):
    pg = Path(tempfile.mkdtemp(dir=e.tmp, prefix="cloudreplay."))
    (pg / "pg_wal").mkdir()
    spool = pg / "bc-spool"
    cfg = e.b3_config("bench/cloudwal", data / "replay/barman", endpoint=endpoint, extra=f"  wal_prefetch: {depth or 0}\n")
    t0 = time.monotonic()
    for name in names:
        if tool.startswith("barman-cloud"):
            cmd = [b.VENV / "bin/barman-cloud-wal-restore", "--endpoint-url", endpoint]
            if depth:
                cmd += ["-p", str(depth), "--spool-dir", spool]
            cmd += [f"s3://{b.BUCKET}/bench/cloudwal", "pg", name, "pg_wal/RECOVERYXLOG"]
        else:
            cmd = [b.B3, "--config", cfg, "wal-restore", "--layout", "barman-cloud", "pg", name, "pg_wal/RECOVERYXLOG"]
        r = subprocess.run(cmd, env=e.env, cwd=pg, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"{tool} {name}: {r.stderr.decode()[-1000:]}")
        os.remove(pg / "pg_wal/RECOVERYXLOG")
    wall = time.monotonic() - t0
    subprocess.run(["pkill", "-f", f"wal-prefetch pg --layout barman-cloud --spool {pg}/"], check=False)
    shutil.rmtree(pg, ignore_errors=True)
    return wall


def replay(b, e, data):
    archive_wals(b, e, data)
    names = [f"{1:08X}{0:08X}{i:08X}" for i in range(1, b.REPLAY_SEGMENTS + 1)]
    rows = {}
    proxy = None
    for setting in ["loopback", "+20 ms"]:
        if setting == "loopback":
            endpoint = b.EP
        else:
            proxy = proxy or b.LatencyProxy(b.EP, 0.020)
            endpoint = proxy.endpoint()
        for rep in range(b.REPEATS):
            for tool, depth in REPLAY_TOOLS:
                wall = replay_once(b, e, data, endpoint, tool, depth, names)
                rate = len(names) / wall
                b.log(f"cloudreplay {setting:9} {tool:30} rep {rep}: {wall:.2f}s = {rate:.1f} segments/s")
                rows.setdefault(setting, {}).setdefault(tool, []).append(rate)
    return replay_report(b, rows)


def replay_report(b, rows):
    lines = [
        "",
        f"barman-cloud WAL replay: {b.REPLAY_SEGMENTS} segments archived by barman-cloud-wal-archive --gzip, fetched one",
        "restore_command at a time, in order (targets: barmans3 ≥ 10× the plain barman-cloud-wal-restore,",
        "≥ 2× with -p 8):",
        "",
        "| setting | tool | segments/s (min / median / max) | vs plain | vs -p 8 |",
        "|---|---|---|---|---|",
    ]
    for setting, by_tool in rows.items():
        med = {t: statistics.median(v) for t, v in by_tool.items()}
        plain = med.get("barman-cloud-wal-restore")
        par = med.get("barman-cloud-wal-restore -p 8")
        for tool, v in by_tool.items():
            lines.append(f"| {setting} | {tool} | {min(v):.1f} / {med[tool]:.1f} / {max(v):.1f} | {med[tool] / plain:.1f} | {med[tool] / par:.1f} |")
    return "\n".join(lines)
