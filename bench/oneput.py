"""The oneput case: `barman.one_put_max` chosen by measurement. The 2 GiB backup (one 1 GiB
relation file and 64 of 16 MiB) goes up with `base-sync` (the first backup), then a second
backup of the same tree with 4 of its files changed and the rest hard links to the first
(Barman's `reuse_backup = link`: server-side copies), with `one_put_max` at 1 GiB (the 1 GiB
file in one PUT, copied by reference later) and at 64 MiB (the part size: that file in 64 MiB
parts, a failed request costs at most a part), on loopback and through the bench's delay proxy
with 20 ms per request and 1 % of requests cut at a random byte (connection reset).

Figures per setting and path: wall time and CPU of each base-sync, requests, retries, MiB sent
and MiB copied server-side (from `--json`), and how many requests the proxy cut.

BENCH_ONEPUT_MIB=N runs it on a generated tree of about N MiB instead (a quick check of the case:
one file of 3/4 of N and four small ones); the figures then say nothing about the default."""

import os
import random
import shutil
import statistics

SETTINGS = [("1GiB", "1 GiB"), ("64MiB", "64 MiB")]
PATHS = [("loopback", 0.0, 0.0), ("+20 ms, 1 % cut", 0.020, 0.01)]
TINY = os.environ.get("BENCH_ONEPUT_MIB")
SECOND = "20261122T000000"
CHANGED = [f"base/1/{17000 + i}" for i in range(4)]


def source(b, e, data):
    """The first backup's directory (`<ID>` with `data/` inside)."""
    if not TINY:
        return data / f"backup/barman/pg/base/{b.ID}"
    mib = max(int(TINY), 24)
    root = e.tmp / "oneput-src" / b.ID
    rng = random.Random(31)
    b.write_random(root / "data/base/1/16400", (mib * 3 // 4) << 20, rng)
    for rel in CHANGED:
        b.write_random(root / "data" / rel, max(1, mib // 16) << 20, rng)
    (root / "data/PG_VERSION").write_text("15\n")
    b.write_random(root / "data/global/pg_control", 8192, rng)
    return root


def prepare(b, home, first):
    """A Barman home with the first backup (hard links to `first`: nothing is copied) and the
    second (hard links to the first but for CHANGED, rewritten as rsync would)."""
    shutil.rmtree(home, ignore_errors=True)
    for sub in ("base", "meta", "wals"):
        (home / "pg" / sub).mkdir(parents=True)
    shutil.copytree(first, home / f"pg/base/{b.ID}", copy_function=os.link)
    shutil.copytree(first, home / f"pg/base/{SECOND}", copy_function=os.link)
    for rel in CHANGED:
        p = home / f"pg/base/{SECOND}/data" / rel
        body = bytearray(p.read_bytes())
        body[:8192] = os.urandom(8192)
        p.unlink()
        p.write_bytes(bytes(body))
    for bid in (b.ID, SECOND):
        (home / f"pg/meta/{bid}-backup.info").write_text("status=DONE\nbegin_wal=000000010000000000000001\n")


def sync(b, e, cfg, backup_id):
    """`base-sync` of one queued backup: (wall, cpu, --json summary)."""
    b.targets.queue(b, e, cfg, backup_id)
    wall, cpu, _, out = b.measure([b.B3, "--config", cfg, "--json", "base-sync"], e.env)
    return wall, cpu, b.targets.last_json(out)


def run(b, e, data):
    first = source(b, e, data)
    home = e.tmp / "oneput-home/barman"
    rows = []
    proxies = {}
    for rep in range(b.REPEATS):
        for path, delay, fail in PATHS:
            if delay or fail:
                proxies.setdefault(path, b.LatencyProxy(b.EP, delay, fail))
                p = proxies[path]
                endpoint = p.endpoint() if not p.is_alive() else f"http://127.0.0.1:{p.port}"
            else:
                p, endpoint = None, b.EP
            order = SETTINGS if rep % 2 == 0 else SETTINGS[::-1]
            for value, label in order:
                prepare(b, home, first)
                prefix = "bench/oneput"
                cfg = e.b3_config(prefix, home, endpoint, f"  one_put_max: {value}\n")
                b.cleanup(e.env, prefix)
                shutil.rmtree(cfg.parent / "state", ignore_errors=True)
                shutil.rmtree(cfg.parent / "queue", ignore_errors=True)
                for which, bid in (("first", b.ID), ("second", SECOND)):
                    cut0 = p.failed if p else 0
                    wall, cpu, s = sync(b, e, cfg, bid)
                    cut = (p.failed if p else 0) - cut0
                    b.log(f"oneput {path:16} {label:6} {which:6} rep {rep}: {wall:.2f}s cpu {cpu:.2f}s "
                          f"requests {s.get('total_requests')} retries {s.get('retries')} cut {cut} "
                          f"up {s.get('bytes_up', 0) >> 20} MiB copied {s.get('bytes_copied', 0) >> 20} MiB")
                    rows.append((path, label, which, wall, cpu, s, cut))
    b.cleanup(e.env, "bench/oneput")
    shutil.rmtree(home.parent, ignore_errors=True)
    if TINY:
        shutil.rmtree(first.parent, ignore_errors=True)
    return report(b, rows)


def report(b, rows):
    size = "2 GiB" if not TINY else f"{max(int(TINY), 24)} MiB (BENCH_ONEPUT_MIB: a check of the case, not figures)"
    lines = [
        "",
        f"one_put_max: the {size} backup by `base-sync` (first), then the second backup with 4 files",
        "changed and the rest hard links (second: server-side copies), `barman.one_put_max` at 1 GiB and",
        "at 64 MiB (the part size), on loopback and through the delay proxy (20 ms per request, 1 % of",
        "requests cut at a random byte). Medians; requests, retries and cut requests summed over the repeats:",
        "",
        "| path | one_put_max | backup | wall s (median / max) | CPU s | requests | retries | cut by the proxy | MiB sent | MiB copied |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path, *_ in PATHS:
        for _, label in SETTINGS:
            for which in ("first", "second"):
                rs = [r for r in rows if r[:3] == (path, label, which)]
                if not rs:
                    continue
                walls = [r[3] for r in rs]
                lines.append(
                    f"| {path} | {label} | {which} | {statistics.median(walls):.2f} / {max(walls):.2f} | "
                    f"{statistics.median(r[4] for r in rs):.2f} | {sum(r[5].get('total_requests', 0) for r in rs)} | "
                    f"{sum(r[5].get('retries', 0) for r in rs)} | {sum(r[6] for r in rs)} | "
                    f"{statistics.median(r[5].get('bytes_up', 0) for r in rs) / (1 << 20):.0f} | "
                    f"{statistics.median(r[5].get('bytes_copied', 0) for r in rs) / (1 << 20):.0f} |"
                )
    return "\n".join(lines)
