"""A registry in another data centre, on loopback: a TCP proxy with latency and a bandwidth cap.

Each direction of each connection is a link of its own: a chunk read at time t leaves the link's
queue once the link is free and its bytes are serialised (len / rate), and arrives half the round
trip later. Chunks are pipelined (many in flight at once), order is kept, and nothing is buffered
beyond what the sender writes — the shape of a long fat pipe, not of a slow server.

    with WanProxy("127.0.0.1:15001", rtt_ms=40, mbit_s=50) as proxy:
        proxy.address   # "127.0.0.1:PORT" to put in a topology instead of the registry

Runs its own event loop on a thread; stopped (and every connection closed) on exit.
"""
from __future__ import annotations

import asyncio
import threading
import time


class _Link:
    """One direction: delay d and rate r; deliveries keep order and overlap (pipelined)."""

    def __init__(self, delay_s: float, bytes_per_s: float) -> None:
        self.delay_s, self.rate = delay_s, bytes_per_s
        self.free_at = 0.0

    def arrival(self, now: float, size: int) -> float:
        departs = max(now, self.free_at) + size / self.rate
        self.free_at = departs
        return departs + self.delay_s


class WanProxy:
    def __init__(self, target: str, *, rtt_ms: float = 40.0, mbit_s: float = 50.0) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.delay_s = rtt_ms / 2000.0
        self.rate = mbit_s * 1e6 / 8
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    def __enter__(self) -> "WanProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.address = "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # every connection closed before the loop stops
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            # The connection itself takes a round trip (SYN, SYN-ACK) before the first byte.
            await asyncio.sleep(2 * self.delay_s)
            server_r, server_w = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self.delay_s, self.rate)
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if chunk is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                now = time.monotonic()
                if not chunk:
                    queue.put_nowait((link.arrival(now, 0), None))
                    break
                queue.put_nowait((link.arrival(now, len(chunk)), chunk))
            await sender
        finally:
            sender.cancel()
