"""Benchmark cases with their own tables: the bandwidth cap (held within ±10 % over a 30 s
transfer, each direction), the second backup (bytes sent and time when most files are unchanged,
against `aws s3 sync` and `s5cmd sync` of the same tree) and the WAL lag of `wal-sync --follow`
(from a WAL's appearance to its verified presence in the bucket)."""

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

CAP_MIB = int(os.environ.get("BENCH_CAP_MIB", "32"))
CAP_SECONDS = 30


def last_json(stdout):
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def bandwidth(b, e, data):
    """`store put` and `store get` of CAP_MIB × 30 s of data under `s3.max_bandwidth`."""
    size = CAP_MIB * CAP_SECONDS << 20
    src = data / f"cap-{size}.bin"
    if not src.exists():
        with open(data / "big.bin", "rb") as f, open(src, "wb") as out:
            out.write(f.read(size))
    extra = f"  max_bandwidth: {CAP_MIB}MiB\n"
    cfg = e.b3_config("bench/capped", data, extra="")
    text = cfg.read_text().replace("barman:\n", extra + "barman:\n", 1)
    cfg.write_text(text)
    rows = []
    for rep in range(b.REPEATS):
        key = f"cap-{rep}"
        up, *_ = b.measure([b.B3, "--config", cfg, "store", "put", src, key], e.env)
        dest = Path(tempfile.mkdtemp(dir=e.tmp)) / "back"
        down, *_ = b.measure([b.B3, "--config", cfg, "store", "get", key, dest], e.env)
        shutil.rmtree(dest.parent, ignore_errors=True)
        for way, wall in (("up", up), ("down", down)):
            rate = size / (1 << 20) / wall
            b.log(f"bandwidth {way} rep {rep}: {wall:.2f}s = {rate:.1f} MiB/s (cap {CAP_MIB})")
            rows.append((way, wall, rate))
    b.cleanup(e.env, "bench/capped")
    lines = [
        "",
        f"Bandwidth cap: `s3.max_bandwidth: {CAP_MIB}MiB`, `store put` then `store get` of "
        f"{size >> 20} MiB ({CAP_SECONDS} s at the cap), whole-command wall time:",
        "",
        "| direction | MiB/s per repeat | deviation from the cap (worst) | within ±10 % |",
        "|---|---|---|---|",
    ]
    for way in ("up", "down"):
        rates = [r for w, _, r in rows if w == way]
        worst = max(abs(r / CAP_MIB - 1) for r in rates)
        lines.append(
            f"| {way} | {' / '.join(f'{r:.1f}' for r in rates)} | {worst * 100:.1f} % | {'yes' if worst <= 0.10 else 'NO'} |"
        )
    return "\n".join(lines)


def second_backup(b, e, data):
    """A second backup of the 2 GiB tree with 4 of its 66 files (6 %) changed and the rest hard
    links to the first (Barman's `reuse_backup = link`), after the first is in the bucket:
    barmans3 base-sync (server-side copies) against aws s3 sync and s5cmd sync of the second
    backup's directory, as BarmanS3 users ship it."""
    first = data / f"backup/barman/pg/base/{b.ID}"
    home = data / "second/barman"
    second_id = "20261122T000000"
    cfg = e.b3_config("bench/second", home)
    rows = []
    for rep in range(b.REPEATS):
        if home.exists():
            shutil.rmtree(home)
        for sub in ("base", "meta", "wals"):
            (home / "pg" / sub).mkdir(parents=True)
        shutil.copytree(first, home / f"pg/base/{b.ID}")
        shutil.copytree(home / f"pg/base/{b.ID}", home / f"pg/base/{second_id}", copy_function=os.link)
        for i in range(4):
            # A changed file is a new file, as rsync writes it: the link is broken.
            p = home / f"pg/base/{second_id}/data/base/1/{17000 + i}"
            body = bytearray(p.read_bytes())
            body[:8192] = os.urandom(8192)
            p.unlink()
            p.write_bytes(bytes(body))
        for bid in (b.ID, second_id):
            (home / f"pg/meta/{bid}-backup.info").write_text(
                "status=DONE\nbegin_wal=000000010000000000000001\n"
            )
        b.cleanup(e.env, "bench/second")
        state = cfg.parent / "state"
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(cfg.parent / "queue", ignore_errors=True)
        queue(b, e, cfg, b.ID)
        wall, cpu, rss, out = b.measure([b.B3, "--config", cfg, "--json", "base-sync"], e.env)
        s = last_json(out)
        rows.append(("barmans3 base-sync, first backup", wall, s.get("bytes_up", 0), s.get("bytes_copied", 0)))
        queue(b, e, cfg, second_id)
        wall, cpu, rss, out = b.measure([b.B3, "--config", cfg, "--json", "base-sync"], e.env)
        s = last_json(out)
        rows.append(("barmans3 base-sync", wall, s.get("bytes_up", 0), s.get("bytes_copied", 0)))
        src = home / f"pg/base/{second_id}"
        aws = [b.VENV / "bin/aws", "--endpoint-url", b.EP, "s3", "sync", src, f"s3://{b.BUCKET}/bench/second-aws/{rep}/"]
        wall, *_ = b.measure(aws, e.env)
        rows.append(("aws s3 sync", wall, b.tree_bytes(src), 0))
        b.cleanup(e.env, f"bench/second-aws/{rep}")
        s5 = [b.VENV / "bin/s5cmd", "--endpoint-url", b.EP, "sync", f"{src}/", f"s3://{b.BUCKET}/bench/second-s5/{rep}/"]
        wall, *_ = b.measure(s5, e.env)
        rows.append(("s5cmd sync", wall, b.tree_bytes(src), 0))
        b.cleanup(e.env, f"bench/second-s5/{rep}")
        b.log(f"second backup rep {rep}: {rows[-2]} / {rows[-1]}")
    b.cleanup(e.env, "bench/second")
    lines = [
        "",
        "Second backup: the 2 GiB backup again with 4 of its 66 files changed, the rest hard links to",
        "the first (Barman's `reuse_backup = link`), after the first is in the bucket; barmans3 copies",
        "unchanged files server-side, the peers sync the second backup's directory to a new prefix",
        "(the first backup's upload by barmans3 is shown for comparison: the peers send every backup whole):",
        "",
        "| tool | wall s per repeat | MiB uploaded | MiB copied server-side |",
        "|---|---|---|---|",
    ]
    med = {}
    for tool in ("barmans3 base-sync, first backup", "barmans3 base-sync", "aws s3 sync", "s5cmd sync"):
        rs = [r for r in rows if r[0] == tool]
        med[tool] = statistics.median(r[1] for r in rs)
        lines.append(
            f"| {tool} | {' / '.join(f'{r[1]:.2f}' for r in rs)} | {rs[0][2] / (1 << 20):.0f} | {rs[0][3] / (1 << 20):.0f} |"
        )
    b3 = [r for r in rows if r[0] == "barmans3 base-sync"][0]
    best = min(med["aws s3 sync"], med["s5cmd sync"])
    sent = b3[2] / (b3[2] + b3[3]) if b3[2] + b3[3] else 0
    lines += ["", f"barmans3 sent {sent * 100:.1f} % of the backup's bytes; speed ratio (best peer wall / barmans3 wall): {best / med['barmans3 base-sync']:.1f}"]
    return "\n".join(lines)


def queue(b, e, cfg, backup_id):
    env = dict(e.env, BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg",
               BARMAN_BACKUP_ID=backup_id, BARMAN_STATUS="DONE")
    subprocess.run([b.B3, "--config", cfg, "queue-add"], env=env, check=True)


LAG_WALS = 200
LAG_RATE = 4.0  # WALs per second


def wal_lag(b, e, data):
    """`wal-sync --follow` while LAG_WALS 16 MiB WALs appear at LAG_RATE per second, each written
    to a temporary name and renamed into place as Barman does: the time from each rename to the
    follower's report that it is in the bucket, verified."""
    home = data / "lag/barman"
    shutil.rmtree(home, ignore_errors=True)
    wals = home / "pg/wals/0000000100000000"
    wals.mkdir(parents=True)
    for sub in ("base", "meta"):
        (home / "pg" / sub).mkdir(parents=True)
    cfg = e.b3_config("bench/lag", home)
    b.cleanup(e.env, "bench/lag")
    body = os.urandom(1 << 20) + bytes(15 << 20)
    proc = subprocess.Popen(
        [b.B3, "--config", cfg, "-v", "wal-sync", "pg", "--follow"],
        env=e.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    shipped = []  # (time, count)
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            if "following" in line:
                ready.set()
            m = re.search(r"shipped (\d+) file", line)
            if m:
                shipped.append((time.monotonic(), int(m.group(1))))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(30)
    written = []
    start = time.monotonic()
    for i in range(1, LAG_WALS + 1):
        name = f"{1:08X}{0:08X}{i:08X}"
        tmp = wals / f".{name}.tmp"
        tmp.write_bytes(body)
        os.rename(tmp, wals / name)
        written.append(time.monotonic())
        time.sleep(max(0.0, start + i / LAG_RATE - time.monotonic()))
    deadline = time.monotonic() + 120
    while sum(n for _, n in shipped) < LAG_WALS and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.terminate()
    proc.wait(30)
    lags, done = [], 0
    for at, n in shipped:
        for j in range(done, min(done + n, LAG_WALS)):
            lags.append(at - written[j])
        done += n
    b.cleanup(e.env, "bench/lag")
    shutil.rmtree(home, ignore_errors=True)
    b.log(f"wal lag: {len(lags)} of {LAG_WALS} shipped, median {statistics.median(lags):.2f}s, worst {max(lags):.2f}s")
    return "\n".join([
        "",
        f"WAL lag: `wal-sync --follow` while {LAG_WALS} WALs of 16 MiB appear at {LAG_RATE:g} per second",
        "(written under a temporary name and renamed into place, as Barman does); time from the rename",
        "to the follower's report that the WAL is verified in the bucket:",
        "",
        "| shipped | median s | 90th percentile s | worst s |",
        "|---|---|---|---|",
        f"| {len(lags)} / {LAG_WALS} | {statistics.median(lags):.2f} | {sorted(lags)[int(len(lags) * 0.9) - 1]:.2f} | {max(lags):.2f} |",
    ])
