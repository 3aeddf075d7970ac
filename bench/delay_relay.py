#!/usr/bin/env python3
"""A TCP relay that holds every chunk for a fixed one-way delay before passing it on, both ways.

This machine's kernel has no netem (CONFIG_NET_SCH_NETEM is off), so bench/tls.sh --delay puts
this in front of the upstream instead: a stand-in for the network between portvakt and NAV or
Altinn. It keeps order within a connection and adds no bandwidth limit. What it cannot delay is the
TCP handshake itself (the kernel answers the SYN), so a new connection costs the TLS handshake's
round trips but not TCP's; `tls.sh` prints how many connections each proxy opened, so that cost
can be read off.

Usage: delay_relay.py LISTEN_PORT UPSTREAM_PORT DELAY_MS COUNT_FILE
COUNT_FILE gets the number of connections that carried data so far (a readiness probe that
connects and closes is not counted), rewritten at each new one.
"""
import asyncio
import sys
import time

listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
delay = float(sys.argv[3]) / 1000
count_file = sys.argv[4]
accepted = 0


async def pipe(reader, writer, first=None):
    """Passes reader's bytes (after `first`, already read) to writer, each chunk `delay` after it
    arrived."""
    queue = asyncio.Queue()
    if first:
        queue.put_nowait((time.monotonic() + delay, first))

    async def read():
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                data = b""
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if not data:
                    writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                return

    await asyncio.gather(read(), write())


async def serve(reader, writer):
    global accepted
    try:
        first = await reader.read(65536)
    except ConnectionError:
        first = b""
    if not first:
        writer.close()
        return
    accepted += 1
    with open(count_file, "w") as f:
        f.write(f"{accepted}\n")
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer, first), pipe(up_reader, writer))
    writer.close()
    up_writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", listen_port, backlog=1024)
    async with server:
        await server.serve_forever()


asyncio.run(main())
