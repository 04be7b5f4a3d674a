"""Benchmark cases that measure barmans3 against a target rather than against a peer's time:
the bandwidth cap (held within ±10 % over a 30 s transfer, each direction) and the second
backup (bytes sent when most files are unchanged, against `aws s3 sync` of the same tree)."""

import json
import os
import shutil
import subprocess
import tempfile
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
    """A second backup of the 2 GiB tree with 4 of its 65 files changed, after the first is in
    the bucket: barmans3 base-sync (server-side copies) against aws s3 sync to a new prefix."""
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
        # Barman's reuse_backup = copy: real copies, so barmans3 must compare bytes.
        shutil.copytree(first, home / f"pg/base/{b.ID}")
        shutil.copytree(first, home / f"pg/base/{second_id}")
        for i in range(4):
            p = home / f"pg/base/{second_id}/data/base/1/{17000 + i}"
            with open(p, "r+b") as f:
                f.write(os.urandom(8192))
        for bid in (b.ID, second_id):
            (home / f"pg/meta/{bid}-backup.info").write_text(
                "status=DONE\nbegin_wal=000000010000000000000001\n"
            )
        b.cleanup(e.env, "bench/second")
        state = cfg.parent / "state"
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(cfg.parent / "queue", ignore_errors=True)
        queue(b, e, cfg, b.ID)
        subprocess.run([b.B3, "--config", cfg, "base-sync"], env=e.env, check=True)
        queue(b, e, cfg, second_id)
        wall, cpu, rss, out = b.measure([b.B3, "--config", cfg, "--json", "base-sync"], e.env)
        s = last_json(out)
        rows.append(("barmans3 base-sync", wall, s.get("bytes_up", 0), s.get("bytes_copied", 0)))
        src = home / f"pg/base/{second_id}"
        aws = [b.VENV / "bin/aws", "--endpoint-url", b.EP, "s3", "sync", src, f"s3://{b.BUCKET}/bench/second-aws/{rep}/"]
        wall, *_ = b.measure(aws, e.env)
        rows.append(("aws s3 sync", wall, b.tree_bytes(src), 0))
        b.cleanup(e.env, f"bench/second-aws/{rep}")
        b.log(f"second backup rep {rep}: {rows[-2]} / {rows[-1]}")
    b.cleanup(e.env, "bench/second")
    lines = [
        "",
        "Second backup: the 2 GiB backup again with 4 of its 16 MiB files changed (Barman's",
        "`reuse_backup = copy`, so unchanged files are compared by their bytes), after the first is in",
        "the bucket; barmans3 copies unchanged files server-side, `aws s3 sync` to a new prefix sends all:",
        "",
        "| tool | wall s per repeat | MiB uploaded | MiB copied server-side |",
        "|---|---|---|---|",
    ]
    for tool in ("barmans3 base-sync", "aws s3 sync"):
        rs = [r for r in rows if r[0] == tool]
        lines.append(
            f"| {tool} | {' / '.join(f'{r[1]:.2f}' for r in rs)} | {rs[0][2] / (1 << 20):.0f} | {rs[0][3] / (1 << 20):.0f} |"
        )
    return "\n".join(lines)


def queue(b, e, cfg, backup_id):
    env = dict(e.env, BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg",
               BARMAN_BACKUP_ID=backup_id, BARMAN_STATUS="DONE")
    subprocess.run([b.B3, "--config", cfg, "queue-add"], env=env, check=True)
