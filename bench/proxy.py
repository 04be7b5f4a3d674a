"""The delay proxy of the benchmark: every request to the S3 server arrives later, as from a
distant bucket, and a given share of requests can be cut to show how a tool retries."""

import asyncio
import random
import threading


class LatencyProxy(threading.Thread):
    """A TCP proxy in front of the S3 server that holds every chunk a client sends for `delay`
    seconds: each request arrives that much later, as from a distant bucket. The delay is a
    pipe's, not a throttle: a chunk leaves `delay` after it came, whatever came before it, so a
    large body is as fast as without the proxy but for its first byte.

    With `fail` > 0 that share of requests (picked at random, seeded) is cut at a random byte of
    the request (its head or body) and both connections are reset, as a flaky WAN drops a
    connection: the client sees a reset, the server a truncated request. Requests are told apart
    by parsing HTTP/1.1 framing (Content-Length; a chunked body is cut in its head only)."""

    def __init__(self, upstream, delay, fail=0.0, seed=20261206):
        super().__init__(daemon=True)
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.delay = delay
        self.fail = fail
        self.rng = random.Random(seed)
        self.requests = 0
        self.failed = 0
        self.ready = threading.Event()
        self.port = None

    def run(self):
        asyncio.run(self.serve())

    async def serve(self):
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def handle(self, cr, cw):
        try:
            ur, uw = await asyncio.open_connection(*self.upstream)
        except OSError:
            cw.close()
            return
        # Bounded: 16 MiB in flight per connection (800 MB/s at 20 ms), then the client waits.
        queue = asyncio.Queue(256)
        loop = asyncio.get_running_loop()
        framing = Requests(self)

        async def inbound():
            cut = False
            try:
                while data := await cr.read(1 << 16):
                    n, cut = framing.feed(data)
                    if n:
                        await queue.put((loop.time() + self.delay, data[:n]))
                    if cut:
                        break
            except OSError:
                pass
            await queue.put((loop.time() + self.delay, "cut" if cut else "end"))

        async def deliver():
            while True:
                at, data = await queue.get()
                await asyncio.sleep(max(0.0, at - loop.time()))
                if data == "cut":
                    # Both sides see the connection reset.
                    uw.transport.abort()
                    cw.transport.abort()
                    return
                if data == "end":
                    uw.close()
                    return
                try:
                    uw.write(data)
                    await uw.drain()
                except OSError:
                    return

        async def outbound():
            try:
                while data := await ur.read(1 << 16):
                    cw.write(data)
                    await cw.drain()
            except OSError:
                pass
            finally:
                cw.close()

        await asyncio.gather(inbound(), deliver(), outbound())

    def endpoint(self):
        self.start()
        self.ready.wait()
        return f"http://127.0.0.1:{self.port}"


class Requests:
    """The HTTP/1.1 framing of one connection's client bytes, enough to find where each request
    starts and ends (Content-Length bodies), and where a request picked to fail is cut."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.offset = 0
        self.head = b""
        self.head_start = 0
        self.body_left = 0
        self.cut_at = None

    def feed(self, data):
        """(bytes of `data` to forward, whether the connection is cut after them)."""
        p = self.proxy
        start, i = self.offset, 0
        self.offset += len(data)
        while i < len(data) and self.cut_at is None and p.fail:
            if self.body_left:
                n = min(self.body_left, len(data) - i)
                self.body_left -= n
                i += n
                continue
            if not self.head:
                self.head_start = start + i
            joined = self.head + data[i:]
            j = joined.find(b"\r\n\r\n")
            if j < 0:
                self.head = joined
                break
            i += j + 4 - len(self.head)
            request, self.head = joined[: j + 4], b""
            length = 0
            for line in request.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            self.body_left = length
            p.requests += 1
            if p.rng.random() < p.fail:
                p.failed += 1
                self.cut_at = self.head_start + p.rng.randrange(len(request) + length)
        if self.cut_at is not None and self.cut_at < start + len(data):
            return max(0, self.cut_at - start), True
        return len(data), False
