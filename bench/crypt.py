"""The encryption case: upload, download, WAL replay and the gpbackup stream cases, each run with
client-side encryption (`encryption:`, the age format) beside the same case without, in
alternating order, on the same data. The figure is encrypted/plain throughput (target >= 85 %).

Sizes: BENCH_CRYPT_MIB (default 2048) for the file and stream cases, BENCH_CRYPT_SEGMENTS
(default BENCH_REPLAY_SEGMENTS) 16 MiB segments for the replay, so a check can run tiny."""

import os
import random
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
SIZE_MIB = int(os.environ.get("BENCH_CRYPT_MIB", "2048"))
MODES = ("plain", "encrypted")
PREFETCH = 8
STREAM_KEY = "/x/backups/20261121/20261121000000/stream"


def keys(b, e):
    """An age identity generated in the bench dir (age-keygen, else rage-keygen): the identity
    file (mode 600) and its public key."""
    ident = e.tmp / "crypt-identity.txt"
    for tool in ("age-keygen", "rage-keygen"):
        if shutil.which(tool):
            subprocess.run([tool, "-o", ident], check=True, capture_output=True)
            break
    else:
        raise RuntimeError("the crypt case needs age-keygen (apt install age) or rage-keygen (cargo install rage)")
    ident.chmod(0o600)
    # Both tools write the public key as a comment: "# public key: age1...".
    public = next(line.split(": ", 1)[1] for line in ident.read_text().splitlines() if line.startswith("# public key: "))
    recipients = e.tmp / "crypt-recipients.txt"
    recipients.write_text(public + "\n")
    return ident, public, recipients


def source(b, data):
    """The file the upload, download and stream cases move: the 2 GiB file at the default size,
    else a random file of BENCH_CRYPT_MIB."""
    big = data / "big.bin"
    if SIZE_MIB == 2048 and big.exists():
        return big
    src = data / f"crypt-{SIZE_MIB}.bin"
    if not src.exists() or src.stat().st_size != SIZE_MIB * MIB:
        b.log(f"generating a {SIZE_MIB} MiB file for the crypt case")
        b.write_random(src, SIZE_MIB * MIB, random.Random(SIZE_MIB))
    return src


def fresh_copy(e, src):
    """A copy of the source the upload cases send, rewritten before each run by freshen()."""
    dst = e.tmp / "crypt-fresh.bin"
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        shutil.copyfile(src, dst)
    return dst


def freshen(path, tag):
    """Writes `tag` at the start of every MiB of `path`, so the S3 server stores every block of
    the next upload anew. Garage keeps one copy of identical blocks: plaintext sent again costs
    it no disk writes, while a ciphertext (a new key every upload) always does, and the figure
    would measure the server's deduplication rather than the client's encryption."""
    t = tag.encode().ljust(16, b".")[:16]
    with open(path, "r+b") as f:
        for off in range(0, path.stat().st_size, MIB):
            os.pwrite(f.fileno(), t, off)


def replay_home(b, data, segments):
    """A Barman home with `segments` WAL segments that pass wal-restore's checks: the replay
    case's own when it has as many, else one generated for this case."""
    last = f"{1:08X}{0:08X}{segments:08X}"
    shared = data / "replay/barman"
    if segments == b.REPLAY_SEGMENTS and (shared / "pg/wals/0000000100000000" / last).exists():
        return shared
    home = data / f"crypt-replay-{segments}/barman"
    wals = home / "pg/wals/0000000100000000"
    if not (wals / last).exists():
        b.log(f"generating {segments} WAL segments for the crypt case")
        rng = random.Random(segments)
        for i in range(1, segments + 1):
            p = wals / f"{1:08X}{0:08X}{i:08X}"
            b.write_random(p, 16 << 20, rng, zeros=i % 2 == 0)
            with open(p, "r+b") as f:
                f.write(struct.pack("<HHIQI4xQII", 0xD110, 2, 1, i * (16 << 20), 0, 7311111111111111111, 16 << 20, 8192))
        for sub in ("base", "meta"):
            (home / "pg" / sub).mkdir(parents=True, exist_ok=True)
    return home


class Setup:
    """Configs per mode: barmans3's and the gpbackup plugin's."""

    def __init__(self, b, e):
        self.b, self.e = b, e
        ident, public, recipients = keys(b, e)
        self.extra = {
            "plain": "",
            "encrypted": f"encryption:\n  recipients: [{public}]\n  identity_file: {ident}\n",
        }
        self.plugin_extra = {
            "plain": "",
            "encrypted": f"  age_recipients_file: {recipients}\n  age_identity_file: {ident}\n",
        }

    def b3(self, mode, prefix, home, more=""):
        return self.e.b3_config(f"{prefix}/{mode}", home, extra=more + self.extra[mode])

    def plugin(self, mode, prefix):
        cfg = self.e.plugin_config(f"{prefix}/{mode}")
        cfg.write_text(cfg.read_text() + self.plugin_extra[mode])
        return cfg


def replay_once(b, e, cfg, names):
    """wal-restore of every segment in order, as PostgreSQL asks; returns the wall time."""
    pg = Path(tempfile.mkdtemp(dir=e.tmp, prefix="crypt-replay."))
    (pg / "pg_wal").mkdir()
    t0 = time.monotonic()
    for name in names:
        r = subprocess.run([b.B3, "--config", cfg, "-q", "wal-restore", "pg", name, "pg_wal/RECOVERYXLOG"],
                           env=e.env, cwd=pg, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"wal-restore {name}: {r.stderr.decode()[-1000:]}")
        os.remove(pg / "pg_wal/RECOVERYXLOG")
    wall = time.monotonic() - t0
    # This pass's prefetcher would end on its own 30 s after the last request.
    subprocess.run(["pkill", "-f", f"wal-prefetch pg --spool {pg}/"], check=False)
    shutil.rmtree(pg, ignore_errors=True)
    return wall


def run(b, e, data):
    s = Setup(b, e)
    src = source(b, data)
    size = src.stat().st_size
    segments = int(os.environ.get("BENCH_CRYPT_SEGMENTS", str(b.REPLAY_SEGMENTS)))
    home = replay_home(b, data, segments)
    names = [f"{1:08X}{0:08X}{i:08X}" for i in range(1, segments + 1)]
    # Sources of the read cases, once per mode.
    for mode in MODES:
        b.log(f"crypt: uploading the {mode} sources")
        subprocess.run([b.B3, "--config", s.b3(mode, "bench/crypt-src", data), "store", "put", src, "big.bin"],
                       env=e.env, check=True, capture_output=True)
        subprocess.run([b.B3, "--config", s.b3(mode, "bench/crypt-replay", home), "wal-sync", "pg"],
                       env=e.env, check=True, capture_output=True)
        with open(src, "rb") as inp:
            subprocess.run([b.PLUGIN, "backup_data", s.plugin(mode, "bench/crypt-stream-src"), STREAM_KEY],
                           env=e.env, stdin=inp, check=True, capture_output=True)
    fresh = fresh_copy(e, src)
    rows = {}  # (case, mode) -> [MiB/s]
    for rep in range(b.REPEATS):
        order = MODES if rep % 2 == 0 else MODES[::-1]
        for mode in order:
            prefix = f"bench/crypt-{rep}"
            freshen(fresh, f"up-{rep}-{mode}")
            up = b.measure([b.B3, "--config", s.b3(mode, prefix, data), "store", "put", fresh, "big.bin"], e.env)
            out = e.tmp / "crypt-download.bin"
            down = b.measure([b.B3, "--config", s.b3(mode, "bench/crypt-src", data), "store", "get", "big.bin", out], e.env)
            out.unlink(missing_ok=True)
            freshen(fresh, f"stream-{rep}-{mode}")
            stream = b.measure([b.PLUGIN, "backup_data", s.plugin(mode, prefix), STREAM_KEY], e.env, stdin=fresh)
            restore = b.measure([b.PLUGIN, "restore_data", s.plugin(mode, "bench/crypt-stream-src"), STREAM_KEY],
                                e.env, discard=True)
            cfg = s.b3(mode, "bench/crypt-replay", home, more=f"  wal_prefetch: {PREFETCH}\n")
            replay = replay_once(b, e, cfg, names)
            b.cleanup(e.env, f"{prefix}/{mode}")
            got = {
                "upload (store put)": (size, up[0], up[1], up[2]),
                "download (store get)": (size, down[0], down[1], down[2]),
                "stream (backup_data)": (size, stream[0], stream[1], stream[2]),
                "stream-restore (restore_data)": (size, restore[0], restore[1], restore[2]),
                f"WAL replay (prefetch {PREFETCH})": (segments * (16 << 20), replay, None, None),
            }
            for case, (n, wall, cpu, rss) in got.items():
                rows.setdefault((case, mode), []).append((n / MIB / wall, cpu, rss))
                b.log(f"crypt {case:30} {mode:9} rep {rep}: {wall:.2f}s = {n / MIB / wall:.0f} MiB/s")
    for mode in MODES:
        for p in ("bench/crypt-src", "bench/crypt-replay", "bench/crypt-stream-src"):
            b.cleanup(e.env, f"{p}/{mode}")
    return report(size, segments, rows)


def report(size, segments, rows):
    lines = [
        "",
        f"Encryption: each case with `encryption:` (age, one X25519 recipient) beside the same case without,",
        f"alternating; {size // MIB} MiB for the file and stream cases, {segments} segments of 16 MiB for the",
        "replay (wal-restore one segment at a time). The upload and stream cases send a copy of the file",
        "with a new tag at the start of every MiB before each run, so the server stores every block anew",
        "in both modes (Garage keeps one copy of identical blocks; ciphertext is never identical).",
        "MiB/s (median), and encrypted/plain (target >= 85 %):",
        "",
        "| case | plain MiB/s | encrypted MiB/s | encrypted / plain | CPU s plain / encrypted | peak RSS MiB plain / encrypted |",
        "|---|---|---|---|---|---|",
    ]
    cases = list(dict.fromkeys(c for c, _ in rows))
    for case in cases:
        p, c = rows[(case, "plain")], rows[(case, "encrypted")]
        mp, mc = statistics.median(r[0] for r in p), statistics.median(r[0] for r in c)
        cpu = rss = "–"
        if p[0][1] is not None:
            cpu = f"{statistics.median(r[1] for r in p):.1f} / {statistics.median(r[1] for r in c):.1f}"
            rss = f"{max(r[2] for r in p) // 1024} / {max(r[2] for r in c) // 1024}"
        ratio = mc / mp * 100
        lines.append(f"| {case} | {mp:.0f} | {mc:.0f} | {ratio:.0f} %{'' if ratio >= 85 else ' (below target)'} | {cpu} | {rss} |")
    return "\n".join(lines)
