"""The dplcompat case: a Bareos volume written and read back through the dplcompat protocol,
the way the storage daemon drives its program (a process per operation, the chunk on stdin in
256 KiB blocks, `iothreads` uploads at once, each after a `stat`; the restore one `stat` +
`download` per chunk, in order), by barmans3-dplcompat and by an s3cmd-based program that drives
s3cmd 2.4.0 as Bareos' shipped wrapper does (written here from the protocol; the wrapper itself
is not copied). Wall time of the volume, CPU and peak RSS of the program's processes, and the
start-to-exit time of a `stat`."""

import hashlib
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

MIB = 1 << 20
BLOCK = 256 << 10
IOTHREADS = 4
# Bareos raises any chunk size at or below 10 MiB to 10 MiB: its "10 MB" default is this.
CHUNKS = {"10 MB": 10 * MIB, "256 MB": 256 * MIB}
VOLUME_BYTES = int(float(os.environ.get("BENCH_DPL_GIB", "2")) * (1 << 30))
STATS = 30

S3CMD_PROGRAM = """#!/bin/bash
# The dplcompat protocol on s3cmd, as Bareos' s3cmd wrapper runs it (see bench/dplcompat.py).
set -Eeuo pipefail
s3() { "$s3cmd_prog" --no-progress --config "$s3cfg" "$@"; }
url="s3://$bucket"
case "$1" in
  options) printf '%s\\n' bucket s3cfg s3cmd_prog ;;
  testconnection) exec "$s3cmd_prog" --no-progress --config "$s3cfg" info "$url" ;;
  list)
    dir="$url/$2/"
    s3 ls "$dir" | while read -r _date _time size name; do
      [[ $size =~ ^[0-9]+$ ]] && echo "${name:${#dir}} $size"
    done ;;
  stat) s3 ls "$url/$2/$3" | { read -r _date _time size _name && echo "$size"; } ;;
  upload) exec "$s3cmd_prog" --no-progress --config "$s3cfg" put - "$url/$2/$3" ;;
  download) exec "$s3cmd_prog" --no-progress --config "$s3cfg" get "$url/$2/$3" - ;;
  remove) exec "$s3cmd_prog" --no-progress --config "$s3cfg" del "$url/$2/$3" ;;
  *) exit 2 ;;
esac
"""


class Proc:
    """One call: its output, exit status, start-to-exit time, and with `rusage` its CPU seconds
    and peak RSS KiB (through GNU time, whose own small process forks the program: a child
    forked from this Python process would count Python's memory as its own)."""

    def __init__(self, prog, env, args, feed=None, rusage=True):
        tf = tempfile.NamedTemporaryFile(delete=False)
        tf.close()
        cmd = (["/usr/bin/time", "-f", "%U %S %M", "-o", tf.name] if rusage else []) + [str(prog), *args]
        start = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if feed:
            f, offset, size = feed
            with open(f, "rb") as src:
                src.seek(offset)
                left = size
                while left:
                    block = src.read(min(BLOCK, left))
                    p.stdin.write(block)
                    left -= len(block)
            p.stdin.close()
        self.out = p.stdout.read()
        self.status = p.wait()
        self.elapsed = time.perf_counter() - start
        self.cpu, self.rss = 0.0, 0
        if rusage:
            user, sys_, rss = Path(tf.name).read_text().split()[-3:]
            self.cpu, self.rss = float(user) + float(sys_), int(rss)
        os.unlink(tf.name)


def tools(b, e, data):
    """(name, program, environment) of both programs, each under its own prefix."""
    s3cfg = e.tmp / "s3cfg"
    host = b.EP.split("://", 1)[1]
    s3cfg.write_text(f"[default]\naccess_key = {b.AK}\nsecret_key = {b.SK}\nhost_base = {host}\nhost_bucket = {host}\n"
                     f"bucket_location = {b.REGION}\nuse_https = False\nsignature_v2 = False\n")
    wrapper = e.tmp / "s3cmd-dplcompat"
    wrapper.write_text(S3CMD_PROGRAM)
    wrapper.chmod(0o755)
    ours = dict(e.env, config=str(e.b3_config("bench/dplcompat", data)), prefix="bench/dplcompat/barmans3")
    theirs = dict(e.env, s3cmd_prog=str(b.VENV / "bin/s3cmd"), s3cfg=str(s3cfg),
                  bucket=f"{b.BUCKET}/bench/dplcompat/s3cmd")
    # The s3cmd program takes the bucket from its URL; a path after it is the prefix.
    return [("barmans3-dplcompat", b.REPO / "target/release/barmans3-dplcompat", ours),
            ("s3cmd wrapper", wrapper, theirs)]


def write(prog, env, vol, src, chunk):
    """The volume by IOTHREADS threads, each chunk `stat` (absent) then `upload`."""
    count = -(-VOLUME_BYTES // chunk)
    nxt, procs, lock, errors = [0], [], threading.Lock(), []

    def worker():
        while True:
            with lock:
                n = nxt[0]
                nxt[0] += 1
            if n >= count or errors:
                return
            part = f"{n:04d}"
            st = Proc(prog, env, ["stat", vol, part])
            size = min(chunk, VOLUME_BYTES - n * chunk)
            up = Proc(prog, env, ["upload", vol, part], (src, n * chunk, size))
            with lock:
                procs.extend([st, up])
                if st.status == 0 or up.status != 0:
                    errors.append(f"{part}: stat {st.status}, upload {up.status}: {up.out[-300:]!r}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(IOTHREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{prog}: {errors[0]}")
    return time.perf_counter() - start, procs


def read(prog, env, vol, digest):
    """The volume as a restore reads it: `stat N` + `download N` until `stat` fails."""
    h, procs, n = hashlib.sha256(), [], 0
    start = time.perf_counter()
    while True:
        st = Proc(prog, env, ["stat", vol, f"{n:04d}"])
        procs.append(st)
        if st.status != 0:
            break
        dl = Proc(prog, env, ["download", vol, f"{n:04d}"])
        procs.append(dl)
        if dl.status != 0 or len(dl.out) != int(st.out):
            raise RuntimeError(f"{prog}: download {n:04d} failed: {dl.out[-300:]!r}")
        h.update(dl.out)
        n += 1
    wall = time.perf_counter() - start
    if h.hexdigest() != digest:
        raise RuntimeError(f"{prog}: the volume read back differs")
    return wall, procs


def run(b, e, data):
    src = data / "big.bin"
    h = hashlib.sha256()
    with open(src, "rb") as f:
        left = VOLUME_BYTES
        while left:
            block = f.read(min(8 * MIB, left))
            h.update(block)
            left -= len(block)
    digest = h.hexdigest()
    rows, stat_ms = [], {}
    for rep in range(b.REPEATS):
        for label, chunk in CHUNKS.items():
            order = tools(b, e, data)
            for name, prog, env in order if rep % 2 == 0 else order[::-1]:
                vol = f"Vol-{chunk // MIB}M-{rep}"
                w, wp = write(prog, env, vol, src, chunk)
                r, rp = read(prog, env, vol, digest)
                stats = [Proc(prog, env, ["stat", vol, "0000"], rusage=False).elapsed for _ in range(STATS)]
                stat_ms.setdefault(name, []).extend(s * 1000 for s in stats)
                cpu = sum(p.cpu for p in wp + rp)
                rss = max(p.rss for p in wp + rp) // 1024
                b.log(f"dplcompat {label:6} {name:18} rep {rep}: write {w:.1f}s read {r:.1f}s cpu {cpu:.1f}s rss {rss} MiB")
                rows.append((label, name, w, r, cpu, rss))
                for part in range(-(-VOLUME_BYTES // chunk)):
                    Proc(prog, env, ["remove", vol, f"{part:04d}"], rusage=False)
    return report(rows, stat_ms)


def report(rows, stat_ms):
    gib = VOLUME_BYTES / (1 << 30)
    lines = [
        "",
        f"dplcompat: a {gib:g} GiB Bareos volume written (iothreads={IOTHREADS}: `stat` + `upload` per chunk, 4 at once)",
        "and read back (`stat` + `download` per chunk, in order) through the dplcompat protocol, a process per",
        "call, by barmans3-dplcompat and by s3cmd 2.4.0 driven as Bareos' s3cmd wrapper drives it. CPU is the sum",
        "over the program's processes, RSS the largest one's:",
        "",
        "| chunk | program | write s (median) | read s (median) | CPU s | peak RSS MiB per process |",
        "|---|---|---|---|---|---|",
    ]
    med = {}
    for label in CHUNKS:
        for name in sorted({r[1] for r in rows}):
            rs = [r for r in rows if r[0] == label and r[1] == name]
            if not rs:
                continue
            w = statistics.median(r[2] for r in rs)
            rd = statistics.median(r[3] for r in rs)
            med[(label, name)] = w + rd
            lines.append(f"| {label} | {name} | {w:.1f} | {rd:.1f} | {statistics.median(r[4] for r in rs):.1f} | {max(r[5] for r in rs)} |")
    lines += ["", "| chunk | speed ratio (s3cmd wrapper / barmans3-dplcompat, write + read) | target |", "|---|---|---|"]
    for label, target in (("10 MB", "≥ 5"), ("256 MB", "≥ 1.5")):
        ours, theirs = med.get((label, "barmans3-dplcompat")), med.get((label, "s3cmd wrapper"))
        if ours and theirs:
            lines.append(f"| {label} | {theirs / ours:.2f} | {target} |")
    lines += ["", "`stat` start to exit, ms (median / max):", ""]
    for name, ms in stat_ms.items():
        lines.append(f"- {name}: {statistics.median(ms):.1f} / {max(ms):.1f} (target for barmans3: median < 20)")
    return "\n".join(lines)
