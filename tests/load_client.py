"""A load on `distilvit-web serve`, run as its own process by tests/test_server_load.py (so the test's process,
which drives Chromium, does not share a GIL with it). Prints one JSON line when it has finished.

    python load_client.py PORT PATH DOWNLOADS DRIPPERS SECONDS

DOWNLOADS clients each download PATH once, all at once, reading as fast as they can; DRIPPERS clients each send a
request head one byte a second and never finish it: when the server cuts one off, it reconnects, until SECONDS
have passed and the downloads are done. Reports bytes per download, how many drip connections the server cut and
after how long each was cut.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def download(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"download refused: {head[:80]!r}")
    total = 0
    while chunk := await reader.read(1 << 20):
        total += len(chunk)
    writer.close()
    return total


async def drip(port: int, stop: float, cuts: list[float]) -> None:
    while time.monotonic() < stop:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened, cut = time.monotonic(), False
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
            while time.monotonic() < stop:
                try:  # a byte a second, watching for the server closing the connection meanwhile
                    if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                        cut = True
                        break
                except asyncio.TimeoutError:
                    pass
                writer.write(b"a")
                await writer.drain()
        except (ConnectionError, OSError):
            cut = True
        finally:
            writer.close()
        if cut:
            cuts.append(time.monotonic() - opened)


async def main(port: int, path: str, downloads: int, drippers: int, seconds: float) -> dict:
    stop = time.monotonic() + seconds
    cuts: list[float] = []
    drips = [asyncio.create_task(drip(port, stop, cuts)) for _ in range(drippers)]
    await asyncio.sleep(1.0)  # the drippers connect first: the downloads run while they hold connections
    started = time.monotonic()
    sizes = await asyncio.gather(*(download(port, path) for _ in range(downloads)))
    download_s = time.monotonic() - started
    await asyncio.gather(*drips)
    return {"download_bytes": sizes, "download_s": round(download_s, 1), "drip_cuts": len(cuts),
            "drip_cut_after_s": [round(min(cuts), 1), round(max(cuts), 1)] if cuts else None}


if __name__ == "__main__":
    port, path, downloads, drippers, seconds = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(int(port), path, int(downloads), int(drippers), float(seconds)))), flush=True)
