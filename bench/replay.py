"""The WAL replay case: PostgreSQL's side of a recovery, one restore_command per segment, in
order, with no replay work in between, against s5cmd copying the same objects in parallel (the
store's raw rate) and barman-cloud-wal-restore. Besides segments per second it reports the wall
time of a barmans3 call whose segment was already in the prefetch spool (the path with no async
runtime, no store client and no listing), the cost that remains once prefetch keeps up."""

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TOOLS = [
    ("barmans3 (prefetch 8)", 8),
    ("barmans3 (no prefetch)", 0),
    ("barman-cloud-wal-restore", None),
    ("s5cmd cp (parallel)", None),
]
SPOOLED = "from the prefetch spool"


def run_once(b, e, data, endpoint, tool, depth, names):
    """One pass over `names`; returns (wall s, [wall s of each call served from the spool])."""
    pg = Path(tempfile.mkdtemp(dir=e.tmp, prefix="replay."))
    (pg / "pg_wal").mkdir()
    cfg = e.b3_config("bench/replay", data / "replay/barman", endpoint=endpoint, extra=f"  wal_prefetch: {depth or 0}\n")
    spooled = []
    t0 = time.monotonic()
    if tool.startswith("s5cmd"):
        subprocess.run([b.VENV / "bin/s5cmd", "--endpoint-url", endpoint, "cp", f"s3://{b.BUCKET}/bench/replay/pg/wals/*", f"{pg}/pg_wal/"], env=e.env, check=True, capture_output=True)
    else:
        for name in names:
            if tool.startswith("barman-cloud"):
                cmd = [b.VENV / "bin/barman-cloud-wal-restore", "--endpoint-url", endpoint, f"s3://{b.BUCKET}/bench/replay", "pg", name, "pg_wal/RECOVERYXLOG"]
            else:
                # Not -q: the info line says where the segment came from.
                cmd = [b.B3, "--config", cfg, "wal-restore", "pg", name, "pg_wal/RECOVERYXLOG"]
            c0 = time.monotonic()
            r = subprocess.run(cmd, env=e.env, cwd=pg, capture_output=True)
            took = time.monotonic() - c0
            if r.returncode != 0:
                raise RuntimeError(f"{tool} {name}: {r.stderr.decode()[-1000:]}")
            if SPOOLED in r.stderr.decode():
                spooled.append(took)
            os.remove(pg / "pg_wal/RECOVERYXLOG")
    wall = time.monotonic() - t0
    # This pass's prefetcher would end on its own 30 s after the last request.
    subprocess.run(["pkill", "-f", f"wal-prefetch pg --spool {pg}/"], check=False)
    shutil.rmtree(pg, ignore_errors=True)
    return wall, spooled


def run(b, e, data, endpoint, label):
    """Every tool, REPEATS times. Returns {tool: [(segments per second, [spooled call s])]}."""
    names = [f"{1:08X}{0:08X}{i:08X}" for i in range(1, b.REPLAY_SEGMENTS + 1)]
    out = {}
    for rep in range(b.REPEATS):
        for tool, depth in TOOLS:
            wall, spooled = run_once(b, e, data, endpoint, tool, depth, names)
            rate = b.REPLAY_SEGMENTS / wall
            note = f", {len(spooled)} from the spool, median {statistics.median(spooled) * 1000:.1f} ms" if spooled else ""
            b.log(f"replay {label:9} {tool:26} rep {rep}: {wall:.2f}s = {rate:.1f} segments/s{note}")
            out.setdefault(tool, []).append((rate, spooled))
    return out


def report(b, rows):
    lines = [
        "",
        f"WAL replay: {b.REPLAY_SEGMENTS} segments of 16 MiB fetched one restore_command at a time, in order, as",
        "PostgreSQL asks for them (no replay work in between); s5cmd copies the same objects in parallel,",
        "the store's raw rate. Segments per second, median of the repeats; a spooled call is one whose",
        "segment the prefetcher had ready (its wall time includes starting the process):",
        "",
        "| setting | tool | segments/s (min / median / max) | vs s5cmd | vs barman-cloud | spooled calls | spooled call ms (median / p90) |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting, by_tool in rows.items():
        rates = {t: [r for r, _ in v] for t, v in by_tool.items()}
        med = {t: statistics.median(v) for t, v in rates.items()}
        raw = med.get("s5cmd cp (parallel)")
        bc = med.get("barman-cloud-wal-restore")
        for tool, runs in by_tool.items():
            calls = sorted(s for _, spooled in runs for s in spooled)
            if calls:
                p90 = calls[min(len(calls) - 1, int(len(calls) * 0.9))]
                spool = f"{len(calls)} of {b.REPLAY_SEGMENTS * len(runs)} | {statistics.median(calls) * 1000:.1f} / {p90 * 1000:.1f}"
            else:
                spool = "– | –"
            v = rates[tool]
            lines.append(
                f"| {setting} | {tool} | {min(v):.1f} / {med[tool]:.1f} / {max(v):.1f} | "
                f"{med[tool] / raw:.2f} | {med[tool] / bc:.1f} | {spool} |"
            )
    return "\n".join(lines)
