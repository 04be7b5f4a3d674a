"""The WAL replay case: PostgreSQL's side of a recovery, one restore_command per segment, in
order, with no replay work in between, against s5cmd copying the same objects in parallel (the
store's raw rate) and barman-cloud-wal-restore. Besides segments per second it reports the wall
time of a barmans3 call whose segment was already in the prefetch spool (the path with no async
runtime, no store client and no listing), the cost that remains once prefetch keeps up. The calls
run the lean `barmans3-wal-restore`, as base-restore --recovery writes restore_command; a spooled
call is also measured through `barmans3 wal-restore`."""

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
    m0, s0 = b.machine_cpu(), b.server_cpu()
    t0 = time.monotonic()
    if tool.startswith("s5cmd"):
        subprocess.run([b.VENV / "bin/s5cmd", "--endpoint-url", endpoint, "cp", f"s3://{b.BUCKET}/bench/replay/pg/wals/*", f"{pg}/pg_wal/"], env=e.env, check=True, capture_output=True)
    else:
        for name in names:
            if tool.startswith("barman-cloud"):
                cmd = [b.VENV / "bin/barman-cloud-wal-restore", "--endpoint-url", endpoint, f"s3://{b.BUCKET}/bench/replay", "pg", name, "pg_wal/RECOVERYXLOG"]
            else:
                # Not -q: the info line says where the segment came from.
                cmd = [b.LEAN, "--config", cfg, "pg", name, "pg_wal/RECOVERYXLOG"]
            c0 = time.monotonic()
            r = subprocess.run(cmd, env=e.env, cwd=pg, capture_output=True)
            took = time.monotonic() - c0
            if r.returncode != 0:
                raise RuntimeError(f"{tool} {name}: {r.stderr.decode()[-1000:]}")
            if SPOOLED in r.stderr.decode():
                spooled.append(took)
            os.remove(pg / "pg_wal/RECOVERYXLOG")
    wall = time.monotonic() - t0
    cpu = (b.machine_cpu() - m0, b.cpu_delta(s0, b.server_cpu()))
    # This pass's prefetcher would end on its own 30 s after the last request.
    subprocess.run(["pkill", "-f", f"wal-prefetch pg --spool {pg}/"], check=False)
    shutil.rmtree(pg, ignore_errors=True)
    return wall, spooled, cpu


def quiet_calls(b, e, data, endpoint, names, lean, calls=30):
    """Wall times of restore_command calls whose segment is spooled, each made only once the
    prefetcher has filled its depth and stopped (nothing else runs during the call): the cost of
    the call itself, process start included; through the lean program or `barmans3 wal-restore`."""
    depth = 8
    pg = Path(tempfile.mkdtemp(dir=e.tmp, prefix="replay-quiet."))
    (pg / "pg_wal").mkdir()
    cfg = e.b3_config("bench/replay", data / "replay/barman", endpoint=endpoint, extra=f"  wal_prefetch: {depth}\n")
    took = []
    try:
        for i, name in enumerate(names[: calls + 1]):
            if i > 0:
                ahead = names[i : i + depth]
                deadline = time.monotonic() + 60
                while not spooled(pg, ahead):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the prefetcher did not spool {ahead[0]}..{ahead[-1]} within 60 s")
                    time.sleep(0.01)
            c0 = time.monotonic()
            program = [b.LEAN, "--config", cfg] if lean else [b.B3, "--config", cfg, "wal-restore"]
            r = subprocess.run(program + ["pg", name, "pg_wal/RECOVERYXLOG"], env=e.env, cwd=pg, capture_output=True)
            t = time.monotonic() - c0
            if r.returncode != 0:
                raise RuntimeError(f"wal-restore {name}: {r.stderr.decode()[-1000:]}")
            if i > 0:
                if SPOOLED not in r.stderr.decode():
                    raise RuntimeError(f"wal-restore {name} was not served from the spool")
                took.append(t)
            os.remove(pg / "pg_wal/RECOVERYXLOG")
    finally:
        subprocess.run(["pkill", "-f", f"wal-prefetch pg --spool {pg}/"], check=False)
        shutil.rmtree(pg, ignore_errors=True)
    return took


def spooled(pg, names):
    """Whether every one of `names` is in the spool and no fetch is under way."""
    try:
        spools = [p for p in (pg / "pg_wal/.barmans3-spool").iterdir() if p.is_dir()]
        if len(spools) != 1:
            return False
        entries = [p.name for p in spools[0].iterdir()]
    except FileNotFoundError:
        return False
    if any(n.startswith(".fetch-") for n in entries):
        return False
    have = {n.split(".", 1)[0] for n in entries if not n.startswith(".")}
    return all(n in have for n in names)


def run(b, e, data, endpoint, label):
    """Every tool, REPEATS times. Returns {tool: [(segments per second, [spooled call s])]}."""
    names = [f"{1:08X}{0:08X}{i:08X}" for i in range(1, b.REPLAY_SEGMENTS + 1)]
    out = {}
    for rep in range(b.REPEATS):
        for tool, depth in TOOLS:
            wall, from_spool, (machine, server) = run_once(b, e, data, endpoint, tool, depth, names)
            rate = b.REPLAY_SEGMENTS / wall
            note = f", {len(from_spool)} from the spool, median {statistics.median(from_spool) * 1000:.1f} ms" if from_spool else ""
            b.log(f"replay {label:9} {tool:26} rep {rep}: {wall:.2f}s = {rate:.1f} segments/s{note}; CPU s machine {machine:.2f} server {server or 0:.2f}")
            out.setdefault(tool, []).append((rate, from_spool, machine, server))
    for quiet, lean in QUIET.items():
        took = quiet_calls(b, e, data, endpoint, names, lean)
        b.log(f"replay {label:9} {quiet}: median {statistics.median(took) * 1000:.1f} ms of {len(took)}")
        out[quiet] = took
    return out


# The spooled call measured alone, through each program: {row name: through the lean one}.
QUIET = {"barmans3-wal-restore": True, "barmans3 wal-restore": False}


def report(b, rows):
    lines = [
        "",
        f"WAL replay: {b.REPLAY_SEGMENTS} segments of 16 MiB fetched one restore_command at a time, in order, as",
        "PostgreSQL asks for them (no replay work in between); s5cmd copies the same objects in parallel,",
        "the store's raw rate. Segments per second, median of the repeats; a spooled call is one whose",
        "segment the prefetcher had ready (its wall time includes starting the process):",
        "",
        "| setting | tool | segments/s (min / median / max) | vs s5cmd | vs barman-cloud | spooled calls | spooled call ms (median / p90) | CPU s: client / S3 server |",
        "|---|---|---|---|---|---|---|---|",
    ]
    quiet = []
    for setting, all_rows in rows.items():
        by_tool = {t: v for t, v in all_rows.items() if t not in QUIET}
        for program in QUIET:
            took = sorted(all_rows.get(program) or [])
            if took:
                quiet.append(f"| {setting} | `{program}` | {len(took)} | {statistics.median(took) * 1000:.1f} | {took[min(len(took) - 1, int(len(took) * 0.9))] * 1000:.1f} |")
        rates = {t: [r[0] for r in v] for t, v in by_tool.items()}
        med = {t: statistics.median(v) for t, v in rates.items()}
        raw = med.get("s5cmd cp (parallel)")
        bc = med.get("barman-cloud-wal-restore")
        for tool, runs in by_tool.items():
            servers = [r[3] for r in runs if r[3] is not None]
            server = statistics.median(servers) if servers else 0.0
            client = statistics.median(r[2] for r in runs) - server
            cpu = f"{client:.2f} / {server:.2f}" if servers else "–"
            calls = sorted(s for r in runs for s in r[1])
            if calls:
                p90 = calls[min(len(calls) - 1, int(len(calls) * 0.9))]
                spool = f"{len(calls)} of {b.REPLAY_SEGMENTS * len(runs)} | {statistics.median(calls) * 1000:.1f} / {p90 * 1000:.1f}"
            else:
                spool = "– | –"
            v = rates[tool]
            lines.append(
                f"| {setting} | {tool} | {min(v):.1f} / {med[tool]:.1f} / {max(v):.1f} | "
                f"{med[tool] / raw:.2f} | {med[tool] / bc:.1f} | {spool} | {cpu} |"
            )
    lines += [
        "",
        "CPU: the machine's busy time during the pass, the S3 server's and the rest (client: every",
        "process of the tool, prefetcher included, and the harness starting each call). A spooled",
        "call measured alone (the prefetcher has filled its depth and stopped before each call):",
        "",
        "| setting | program | calls | wall ms median | p90 |",
        "|---|---|---|---|---|",
        *quiet,
    ]
    return "\n".join(lines)
