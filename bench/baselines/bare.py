"""
A bare `websockets` broadcast server: the ceiling for Python on this machine.
Each path is a room; every text frame is broadcast to the room, sender included.

Run: python bench/baselines/bare.py PORT
"""

import asyncio
import sys
from collections import defaultdict

import websockets

rooms: dict[str, set] = defaultdict(set)


async def handler(ws):
    room = rooms[ws.request.path]
    room.add(ws)
    try:
        async for frame in ws:
            websockets.broadcast(room, frame)
    finally:
        room.discard(ws)


async def main(port: int) -> None:
    # No permessage-deflate: none of the other targets compresses either.
    async with websockets.serve(handler, "127.0.0.1", port, max_size=2**16, compression=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
