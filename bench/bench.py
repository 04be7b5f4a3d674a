"""The benchmark harness behind bench/run: generates the data once, runs every case for every
tool with repeats in alternating order, measures wall time, client CPU, throughput, peak RSS
(GNU time) and barmans3's request counts, and writes the markdown report."""

import datetime
import getpass
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cloud
import crypt
import dplcompat
import drill
import oneput
import pgbackrest
import replay
import replicate
import scale
import targets
from proxy import LatencyProxy

REPO = Path(__file__).resolve().parent.parent
D = Path(os.environ["BENCH_DIR"])
VENV = Path(os.environ["VENV"])
EP = os.environ["BENCH_S3_ENDPOINT"]
BUCKET = os.environ["BENCH_S3_BUCKET"]
REGION = os.environ.get("BENCH_S3_REGION", "us-east-1")
AK, SK = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
CASES = os.environ.get(
    "BENCH_CASES",
    "wal,upload,small,resync,stream,stream-restore,download,walnochange,replay,restore,sync,second,lag,bandwidth,dplcompat,cloudrestore,cloudreplay,replicate,oneput,pgbackrest,drill,crypt",
).split(",")
# Cases with their own table instead of a row per tool.
OWN_TABLE = ("replay", "restore", "second", "lag", "bandwidth", "dplcompat", "cloudrestore", "cloudreplay", "replicate", "oneput", "pgbackrest", "scale", "drill", "crypt")
# `sync` is two rows: the first sync of the small-file tree, then a resync with nothing changed.
CASES = [c for case in CASES for c in (["sync", "sync-nochange"] if case == "sync" else [case])]
# BENCH_PROFILE=debug: the debug build, to check the harness itself (figures meaningless).
PROFILE = os.environ.get("BENCH_PROFILE", "release")
B3 = REPO / f"target/{PROFILE}/barmans3"
# The lean restore_command base-restore --recovery writes.
LEAN = REPO / f"target/{PROFILE}/barmans3-wal-restore"
PLUGIN = REPO / f"target/{PROFILE}/gpbackup_s3_plugin"
GIB = 1 << 30
TOOLS = ["barmans3", "aws", "s5cmd", "rclone"]
ID = "20261121T000000"
STREAM_SOURCE = "bench/stream-source"
REPLAY_SEGMENTS = int(os.environ.get("BENCH_REPLAY_SEGMENTS", "100"))


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def write_random(path, size, rng, zeros=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(bytes(n) if zeros else rng.randbytes(n))
            left -= n


def generate():
    rng = random.Random(20261121)
    data = D / "data"
    wals = data / "wal/barman/pg/wals/0000000100000000"
    if not (wals / "000000010000000000000040").exists():
        log("generating 64 x 16 MiB WAL files (half random, half zeros)")
        for i in range(1, 65):
            write_random(wals / f"{1:08X}{0:08X}{i:08X}", 16 << 20, rng, zeros=i % 2 == 0)
    big = data / "big.bin"
    if not big.exists() or big.stat().st_size != 2 * GIB:
        log("generating a 2 GiB file")
        write_random(big, 2 * GIB, rng)
    small = data / f"small/barman/pg/base/{ID}/data"
    if not (small / "f4999").exists():
        log("generating 5000 files of 4-16 KiB")
        for i in range(5000):
            write_random(small / f"d{i % 50:02}" / f"f{i}", rng.randint(4096, 16384), rng)
        (small / "f4999").write_bytes(b"x" * 4096)
        meta = data / "small/barman/pg/meta"
        meta.mkdir(parents=True, exist_ok=True)
        (meta / f"{ID}-backup.info").write_text("status=DONE\nbegin_wal=000000010000000000000001\n")
        (data / "small/barman/pg/wals").mkdir(parents=True, exist_ok=True)
    replay_dir = data / "replay/barman/pg/wals/0000000100000000"
    if not (replay_dir / f"{1:08X}{0:08X}{REPLAY_SEGMENTS:08X}").exists():
        log(f"generating {REPLAY_SEGMENTS} WAL segments of 16 MiB with valid page headers")
        for i in range(1, REPLAY_SEGMENTS + 1):
            p = replay_dir / f"{1:08X}{0:08X}{i:08X}"
            write_random(p, 16 << 20, rng, zeros=i % 2 == 0)
            with open(p, "r+b") as f:
                # XLogLongPageHeaderData: magic, XLP_LONG_HEADER, tli, pageaddr, rem_len, pad,
                # sysid, seg_size, blcksz: what wal-restore checks before handing a segment over.
                f.write(struct.pack("<HHIQI4xQII", 0xD110, 2, 1, i * (16 << 20), 0, 7311111111111111111, 16 << 20, 8192))
    backup = data / f"backup/barman/pg/base/{ID}/data"
    if not (backup / "global/pg_control").exists():
        log("generating a 2 GiB backup (one 1 GiB relation file, 1 GiB in 64 files)")
        write_random(backup / "base/1/16400", GIB, rng)
        for i in range(64):
            write_random(backup / f"base/1/{17000 + i}", 16 << 20, rng)
        (backup / "PG_VERSION").write_text("15\n")
        write_random(backup / "global/pg_control", 8192, rng)
        meta = data / "backup/barman/pg/meta"
        meta.mkdir(parents=True, exist_ok=True)
        (meta / f"{ID}-backup.info").write_text("status=DONE\nbegin_wal=000000010000000000000001\n")
        (data / "backup/barman/pg/wals").mkdir(parents=True, exist_ok=True)
    wal10k = data / "wal10k/barman/pg/wals"
    if not wal10k.exists():
        log("generating a 10 000-WAL archive (tiny files)")
        for seg in range(1, 10001):
            name = f"{1:08X}{seg // 256:08X}{seg % 256:08X}"
            p = wal10k / name[:16] / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(name.encode())
    return data


def tree_bytes(p):
    p = Path(p)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


class Env:
    """Per-tool configuration (files and environment variables)."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(dir=D, prefix="run."))
        aws_cfg = self.tmp / "aws.config"
        # BarmanS3's README: 24 concurrent requests, 128 MB parts.
        aws_cfg.write_text(
            f"[default]\nregion = {REGION}\ns3 =\n  max_concurrent_requests = 24\n  multipart_chunksize = 128MB\n"
        )
        self.env = dict(os.environ)
        # A CA bundle variable makes rclone's S3 backend refuse to start; the local server is HTTP.
        self.env.pop("AWS_CA_BUNDLE", None)
        self.env.update(
            AWS_CONFIG_FILE=str(aws_cfg),
            AWS_SHARED_CREDENTIALS_FILE=str(self.tmp / "none"),
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            RCLONE_CONFIG_G_TYPE="s3",
            RCLONE_CONFIG_G_PROVIDER="Other",
            RCLONE_CONFIG_G_ENDPOINT=EP,
            RCLONE_CONFIG_G_ACCESS_KEY_ID=AK,
            RCLONE_CONFIG_G_SECRET_ACCESS_KEY=SK,
            RCLONE_CONFIG_G_REGION=REGION,
            RCLONE_CONFIG_G_FORCE_PATH_STYLE="true",
            RCLONE_CONFIG="/dev/null",
        )

    def b3_config(self, prefix, home, endpoint=EP, extra=""):
        d = self.tmp / (prefix.replace("/", "_") + (f"-{abs(hash((endpoint, extra)))}" if (endpoint, extra) != (EP, "") else ""))
        d.mkdir(parents=True, exist_ok=True)
        (d / "barman.conf").write_text(f"[barman]\nbarman_user = {getpass.getuser()}\nbarman_home = {home}\n[pg]\nconninfo = x\n")
        cfg = d / "barmans3.yaml"
        cfg.write_text(
            f"s3:\n  endpoint: {endpoint}\n  region: {REGION}\n  bucket: {BUCKET}\n  prefix: {prefix}\n"
            f"  access_key_id: {AK}\n  secret_access_key: {SK}\n"
            f"state:\n  dir: {d}/state\n  queue_dir: {d}/queue\n"
            f"barman:\n  config: {d}/barman.conf\n{extra}"
        )
        cfg.chmod(0o600)
        return cfg

    def plugin_config(self, prefix):
        cfg = self.tmp / f"gp-{prefix.replace('/', '_')}.yaml"
        cfg.write_text(
            f"executablepath: {PLUGIN}\noptions:\n  endpoint: {EP}\n  region: {REGION}\n"
            f"  aws_access_key_id: {AK}\n  aws_secret_access_key: {SK}\n  bucket: {BUCKET}\n  folder: {prefix}\n"
        )
        cfg.chmod(0o600)
        return cfg


def measure(cmd, env, stdin=None, cwd=None, discard=False):
    """Runs cmd under GNU time; returns wall s, cpu s, peak RSS KiB, stdout (empty with
    `discard`: a download to stdout goes to /dev/null, not into this process)."""
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    # Every tool starts on a settled disk: none pays for the writeback of what ran before it.
    os.sync()
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name] + [str(c) for c in cmd]
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp:
        out = subprocess.DEVNULL if discard else subprocess.PIPE
        r = subprocess.run(full, env=env, stdin=inp, stdout=out, stderr=subprocess.PIPE, cwd=cwd)
    wall, user, sys_, rss = Path(tf.name).read_text().split()[-4:]
    os.unlink(tf.name)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return float(wall), float(user) + float(sys_), int(rss), (r.stdout or b"").decode()


def server_cpu():
    """CPU seconds the local S3 server has used so far; None for another endpoint. On two cores
    shared by client and server, the server's share bounds every tool's speed: the figure says
    how close a case runs to that bound."""
    try:
        pid = int(os.environ["BARMANS3_TEST_S3_PID"])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (KeyError, ValueError, OSError, IndexError):
        return None


def machine_cpu():
    """CPU seconds every process of the machine has used so far (busy time from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_delta(before, after):
    return None if before is None or after is None else after - before


def requests_of(stdout):
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)["total_requests"]
        except (ValueError, KeyError, TypeError):
            continue
    return None


def s5(env, *args):
    subprocess.run([VENV / "bin/s5cmd", "--endpoint-url", EP, *args], env=env, check=False, capture_output=True)


def cleanup(env, prefix):
    s5(env, "rm", f"s3://{BUCKET}/{prefix}/*")


def run_case(case, tool, e, data, rep):
    prefix = f"bench/{case}/{tool}/{rep}"
    url = f"s3://{BUCKET}/{prefix}"
    aws = [VENV / "bin/aws", "--endpoint-url", EP, "s3"]
    s5c = [VENV / "bin/s5cmd", "--endpoint-url", EP]
    env = e.env
    size = None
    durable = None
    if case == "wal":
        src = data / "wal/barman/pg/wals"
        size = tree_bytes(src)
        cmd = {
            "aws": aws + ["sync", src, url + "/wals/"],
            "s5cmd": s5c + ["sync", f"{src}/", url + "/wals/"],
            "rclone": ["rclone", "copy", src, f"G:{BUCKET}/{prefix}/wals"],
            "barmans3": [B3, "--config", e.b3_config(prefix, data / "wal/barman"), "--json", "wal-sync", "pg"],
        }[tool]
        res = measure(cmd, env)
    elif case == "upload":
        src = data / "big.bin"
        size = src.stat().st_size
        cmd = {
            "aws": aws + ["cp", src, url + "/big.bin"],
            "s5cmd": s5c + ["cp", src, url + "/big.bin"],
            "rclone": ["rclone", "copyto", src, f"G:{BUCKET}/{prefix}/big.bin"],
            "barmans3": [B3, "--config", e.b3_config(prefix, data), "--json", "store", "put", src, "big.bin"],
        }[tool]
        res = measure(cmd, env)
    elif case in ("small", "resync"):
        home = data / "small/barman"
        src = home / f"pg/base/{ID}"
        size = tree_bytes(src)
        base = f"bench/small-{rep}/{tool}"
        burl = f"s3://{BUCKET}/{base}"
        cfg = e.b3_config(base, home)
        if tool == "barmans3" and case == "small":
            qenv = dict(env, BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg",
                        BARMAN_BACKUP_ID=ID, BARMAN_STATUS="DONE")
            subprocess.run([B3, "--config", cfg, "queue-add"], env=qenv, check=True)
        cmd = {
            "aws": aws + ["sync", src, burl + f"/pg/base/{ID}/"],
            "s5cmd": s5c + ["sync", f"{src}/", burl + f"/pg/base/{ID}/"],
            "rclone": ["rclone", "sync" if case == "resync" else "copy", src, f"G:{BUCKET}/{base}/pg/base/{ID}"],
            "barmans3": [B3, "--config", cfg, "--json"]
            + (["base-sync"] if case == "small" else ["full-sync", "--no-delete", "pg"]),
        }[tool]
        res = measure(cmd, env)
        prefix = base if case == "resync" else None  # the resync case reuses the small upload
    elif case in ("sync", "sync-nochange"):
        # A directory tree to a prefix, as `aws s3 sync` in screen did for BarmanS3 users: the
        # 5000 small files; the resync (nothing changed) reuses the first sync's prefix.
        src = data / f"small/barman/pg/base/{ID}/data"
        size = tree_bytes(src)
        base = f"bench/sync-{rep}/{tool}"
        turl = f"s3://{BUCKET}/{base}/tree/"
        cmd = {
            "aws": aws + ["sync", src, turl],
            "s5cmd": s5c + ["sync", f"{src}/", turl],
            "rclone": ["rclone", "sync", src, f"G:{BUCKET}/{base}/tree"],
            "barmans3": [B3, "--config", e.b3_config(base, data / "small/barman"), "--json", "sync", src, "tree"],
        }[tool]
        res = measure(cmd, env)
        prefix = None  # the resync case reuses the upload; main() cleans up after it
    elif case == "stream":
        src = data / "big.bin"
        size = src.stat().st_size
        cmd = {
            "aws": aws + ["cp", "-", url + "/stream"],
            "s5cmd": s5c + ["pipe", url + "/stream"],
            "rclone": ["rclone", "rcat", f"G:{BUCKET}/{prefix}/stream"],
            "barmans3": [PLUGIN, "backup_data", e.plugin_config(prefix), "/x/backups/20261121/20261121000000/stream"],
        }[tool]
        res = measure(cmd, env, stdin=src)
    elif case == "stream-restore":
        # The plugin's restore_data of the object backup_data made (peak RSS is the figure:
        # the plugin's default config, 500 MB chunks), against the peers' stream to stdout.
        size = (data / "big.bin").stat().st_size
        key = f"{STREAM_SOURCE}/backups/20261121/20261121000000/stream"
        cmd = {
            "aws": aws + ["cp", f"s3://{BUCKET}/{key}", "-"],
            "s5cmd": s5c + ["cat", f"s3://{BUCKET}/{key}"],
            "rclone": ["rclone", "cat", f"G:{BUCKET}/{key}"],
            "barmans3": [PLUGIN, "restore_data", e.plugin_config(STREAM_SOURCE), "/x/backups/20261121/20261121000000/stream"],
        }[tool]
        res = measure(cmd, env, discard=True)
        prefix = None
    elif case == "download":
        size = 2 * GIB
        out = e.tmp / "download.bin"
        key = "bench/download-source/big.bin"
        cmd = {
            "aws": aws + ["cp", f"s3://{BUCKET}/{key}", out],
            "s5cmd": s5c + ["cp", f"s3://{BUCKET}/{key}", out],
            "rclone": ["rclone", "copyto", f"G:{BUCKET}/{key}", out],
            "barmans3": [B3, "--config", e.b3_config("bench/download-source", data), "--json", "store", "get", "big.bin", out],
        }[tool]
        res = measure(cmd, env)
        # barmans3 fsyncs the file before it exits; a peer's bytes are on disk only after this.
        durable = 0.0 if tool == "barmans3" else timed_sync()
        out.unlink(missing_ok=True)
        prefix = None
    elif case == "walnochange":
        if tool != "barmans3":
            return None
        cfg = e.b3_config("bench/wal10k", data / "wal10k/barman")
        res = measure([B3, "--config", cfg, "--json", "wal-sync", "pg"], env)
        size = 0
        prefix = None
    wall, cpu, rss, out = res
    if prefix and case not in ("small",):
        cleanup(env, prefix)
    return dict(wall=wall, cpu=cpu, rss=rss, size=size, requests=requests_of(out) if tool == "barmans3" else None, sync=durable)


def timed_sync():
    """Seconds a `sync` takes: what a tool that leaves its bytes in the page cache still owes."""
    t0 = time.monotonic()
    os.sync()
    return time.monotonic() - t0


def restore(e, data):
    """base-restore of the 2 GiB backup against s5cmd copying the same prefix."""
    out = {}
    src = f"s3://{BUCKET}/bench/backup/pg/base/{ID}/*"
    size = tree_bytes(data / f"backup/barman/pg/base/{ID}")
    for rep in range(REPEATS):
        for tool in ["barmans3 base-restore", "s5cmd cp (parallel)"]:
            dest = Path(tempfile.mkdtemp(dir=e.tmp, prefix="restore."))
            if tool.startswith("s5cmd"):
                cmd = [VENV / "bin/s5cmd", "--endpoint-url", EP, "cp", src, f"{dest}/"]
            else:
                shutil.rmtree(dest)
                cmd = [B3, "--config", e.b3_config("bench/backup", data / "backup/barman"), "--json", "base-restore", "pg", ID, dest]
            s0 = server_cpu()
            wall, cpu, rss, _ = measure(cmd, e.env)
            srv = cpu_delta(s0, server_cpu())
            # base-restore makes the directory durable before it exits; s5cmd's copy is on disk
            # only after a sync.
            synced = wall + timed_sync() if tool.startswith("s5cmd") else None
            shutil.rmtree(dest, ignore_errors=True)
            log(f"restore {tool:24} rep {rep}: {wall:.2f}s cpu {cpu:.2f}s server cpu {srv or 0:.2f}s rss {rss // 1024} MiB" + (f", with sync {synced:.2f}s" if synced else ""))
            out.setdefault(tool, []).append((wall, cpu, rss, size, srv))
            if synced:
                out.setdefault("s5cmd cp (parallel) + sync", []).append((synced, cpu, rss, size, srv))
    return out


def own_case(extra, run):
    """Runs a case with its own table; a case that fails is reported as failed, and the
    cases before and after it keep their figures."""
    try:
        extra.append(run())
    except Exception as exc:  # noqa: BLE001 (any failure of one case)
        traceback.print_exc()
        extra.append(f"\n**A case failed**: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def main():
    # The crypt case makes its own data (its sizes can be tiny); every other case shares these.
    data = generate() if set(CASES) - {"crypt"} else D / "data"
    e = Env()
    results = {}
    extra = []
    if "replay" in CASES:
        log("uploading the replay WALs")
        subprocess.run([B3, "--config", e.b3_config("bench/replay", data / "replay/barman"), "wal-sync", "pg"], env=e.env, check=True)
        me = sys.modules[__name__]
        cloud.ensure_barman_cloud(me)

        def replay_case():
            rows = {"loopback": replay.run(me, e, data, EP, "loopback")}
            proxy = LatencyProxy(EP, 0.020)
            rows["+20 ms"] = replay.run(me, e, data, proxy.endpoint(), "+20 ms")
            return replay.report(me, rows)
        own_case(extra, replay_case)
    if "restore" in CASES:
        log("base-sync of the 2 GiB backup")
        cfg = e.b3_config("bench/backup", data / "backup/barman")
        qenv = dict(e.env, BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg", BARMAN_BACKUP_ID=ID, BARMAN_STATUS="DONE")
        subprocess.run([B3, "--config", cfg, "queue-add"], env=qenv, check=True)
        subprocess.run([B3, "--config", cfg, "base-sync"], env=e.env, check=True)
        own_case(extra, lambda: restore_report(restore(e, data)))
    if "second" in CASES:
        own_case(extra, lambda: targets.second_backup(sys.modules[__name__], e, data))
    if "lag" in CASES:
        own_case(extra, lambda: targets.wal_lag(sys.modules[__name__], e, data))
    if "bandwidth" in CASES:
        own_case(extra, lambda: targets.bandwidth(sys.modules[__name__], e, data))
    if "dplcompat" in CASES:
        own_case(extra, lambda: dplcompat.run(sys.modules[__name__], e, data))
    if "oneput" in CASES:
        own_case(extra, lambda: oneput.run(sys.modules[__name__], e, data))
    if "pgbackrest" in CASES:
        own_case(extra, lambda: pgbackrest.run(sys.modules[__name__], e, data))
    if "cloudrestore" in CASES:
        me = sys.modules[__name__]
        own_case(extra, lambda: cloud.restore_report(me, cloud.restore(me, e, data)))
    if "cloudreplay" in CASES:
        own_case(extra, lambda: cloud.replay(sys.modules[__name__], e, data))
    if "replicate" in CASES:
        own_case(extra, lambda: replicate.run(sys.modules[__name__], e, data))
    if "scale" in CASES:
        own_case(extra, lambda: scale.run(sys.modules[__name__], e, data))
    if "drill" in CASES:
        own_case(extra, lambda: drill.run_case(sys.modules[__name__], e, data))
    if "crypt" in CASES:
        own_case(extra, lambda: crypt.run(sys.modules[__name__], e, data))
    # Shared setup: the download source, the 10k archive in the bucket.
    if "download" in CASES:
        log("uploading the download source")
        subprocess.run([B3, "--config", e.b3_config("bench/download-source", data), "store", "put", data / "big.bin", "big.bin"], env=e.env, check=True)
    if "stream-restore" in CASES:
        log("backup_data of the stream-restore source")
        with open(data / "big.bin", "rb") as inp:
            subprocess.run([PLUGIN, "backup_data", e.plugin_config(STREAM_SOURCE), "/x/backups/20261121/20261121000000/stream"],
                           env=e.env, stdin=inp, check=True)
    if "walnochange" in CASES:
        log("initial wal-sync of the 10 000-WAL archive")
        cfg = e.b3_config("bench/wal10k", data / "wal10k/barman")
        subprocess.run([B3, "--config", cfg, "wal-sync", "pg"], env=e.env, check=True)
    for case in (c for c in CASES if c not in OWN_TABLE):
        for rep in range(REPEATS):
            order = TOOLS[rep % len(TOOLS):] + TOOLS[: rep % len(TOOLS)]
            for tool in order:
                r = run_case(case, tool, e, data, rep)
                if r is None:
                    continue
                log(f"{case:12} {tool:9} rep {rep}: {r['wall']:.2f}s cpu {r['cpu']:.2f}s rss {r['rss'] // 1024} MiB" + (f" requests {r['requests']}" if r["requests"] is not None else ""))
                results.setdefault(case, {}).setdefault(tool, []).append(r)
        if case == "resync":
            for rep in range(REPEATS):
                for tool in TOOLS:
                    cleanup(e.env, f"bench/small-{rep}/{tool}")
        if case == "sync-nochange":
            for rep in range(REPEATS):
                for tool in TOOLS:
                    cleanup(e.env, f"bench/sync-{rep}/{tool}")
    report(results, extra)


def restore_report(rows):
    lines = [
        "",
        "Restore: base-restore of the 2 GiB backup (every file verified, written in place) against",
        "s5cmd copying the same prefix:",
        "",
        "| tool | wall s (min / median / max) | MiB/s | CPU s per GiB | S3 server CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    med = {}
    for tool, runs in rows.items():
        walls = [r[0] for r in runs]
        m = statistics.median(walls)
        size = runs[0][3]
        med[tool] = m
        cpu = statistics.median(r[1] for r in runs) / (size / GIB)
        srv = [r[4] for r in runs if r[4] is not None]
        srv_text = f"{statistics.median(srv):.2f}" if srv else "–"
        lines.append(f"| {tool} | {min(walls):.2f} / {m:.2f} / {max(walls):.2f} | {size / (1 << 20) / m:.0f} | {cpu:.2f} | {srv_text} | {max(r[2] for r in runs) // 1024} |")
    s5 = med.get("s5cmd cp (parallel)")
    s5sync = med.get("s5cmd cp (parallel) + sync")
    b3 = med.get("barmans3 base-restore")
    if s5 and b3:
        lines += ["", f"Speed ratio (s5cmd wall / barmans3 wall): {s5 / b3:.2f}"]
    if s5sync and b3:
        lines += [
            f"Durable (s5cmd then `sync` / barmans3, which syncs before it exits): {s5sync / b3:.2f}",
        ]
    srv = [r[4] for runs in rows.values() for r in runs if r[4] is not None]
    if srv:
        cores = os.cpu_count() or 1
        floor = statistics.median(srv) / cores
        lines += [
            "",
            f"The S3 server alone used a median {statistics.median(srv):.2f} CPU s per run: on {cores} cores "
            f"shared with the client no tool can finish in under {floor:.2f} s here.",
        ]
    return "\n".join(lines)


def report(results, extra=()):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    date = datetime.date.today().isoformat()
    lines = [
        f"# Benchmark {date} ({commit})",
        "",
        f"S3 server: {EP} ({'local Garage' if '127.0.0.1' in EP else 'remote'}), {os.cpu_count()} cores shared by client and server; {REPEATS} repeats, tools in alternating order.",
        "Peers: AWS CLI (BarmanS3's settings: 24 concurrent requests, 128 MB parts), s5cmd and rclone with their defaults.",
        "",
        "| case | tool | wall s (min / median / max) | MiB/s (median) | CPU s per GiB | peak RSS MiB | requests |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for case, by_tool in results.items():
        med = {}
        for tool in TOOLS:
            runs = by_tool.get(tool)
            if not runs:
                continue
            walls = [r["wall"] for r in runs]
            m = statistics.median(walls)
            size = runs[0]["size"] or 0
            rate = size / (1 << 20) / m if m and size else 0
            cpu_gib = statistics.median(r["cpu"] for r in runs) / (size / GIB) if size else statistics.median(r["cpu"] for r in runs)
            rss = max(r["rss"] for r in runs) // 1024
            reqs = ", ".join(str(r["requests"]) for r in runs if r["requests"] is not None) or "-"
            med[tool] = (m, cpu_gib)
            lines.append(f"| {case} | {tool} | {min(walls):.2f} / {m:.2f} / {max(walls):.2f} | {rate:.0f} | {cpu_gib:.2f} | {rss} | {reqs} |")
        peers = {t: v for t, v in med.items() if t != "barmans3"}
        if "barmans3" in med and peers:
            best = min(peers, key=lambda t: peers[t][0])
            speed = peers[best][0] / med["barmans3"][0]
            cpu = med["barmans3"][1] / med["s5cmd"][1] if "s5cmd" in med and med["s5cmd"][1] else float("nan")
            summary.append(f"| {case} | {best} | {speed:.2f} | {cpu:.2f} |")
            durable = {t: statistics.median(r["wall"] + r["sync"] for r in by_tool[t])
                       for t in peers if all(r.get("sync") is not None for r in by_tool[t])}
            if durable:
                best = min(durable, key=durable.get)
                summary.append(f"| {case}, on disk (peer then `sync`; barmans3 fsyncs before it exits) | {best} | {durable[best] / med['barmans3'][0]:.2f} | |")
    lines += [
        "",
        "Ratios (barmans3 against the best peer of each case; speed > 1 means barmans3 is faster;",
        "CPU is barmans3's CPU per GiB over s5cmd's, target ≤ 0.5):",
        "",
        "| case | best peer | speed ratio (peer wall / barmans3 wall) | CPU ratio vs s5cmd |",
        "|---|---|---|---|",
        *summary,
        *extra,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = REPO / "bench/results" / f"{date}-{commit}.md"
    # Another run of the same commit on the same day (a subset of the cases) gets its own file.
    n = 2
    while out.exists():
        out = REPO / "bench/results" / f"{date}-{commit}-{n}.md"
        n += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
