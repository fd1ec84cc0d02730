"""
A bare `websockets` topic server: the floor for Python live data on this
machine, for bench/topics.py's `bare` target.

It does the least a live-data server across processes must: each process
reads the publications from one Redis pub/sub channel and hands them to its
subscribers in rounds, as the project's topic hub does (everything waiting
at once, at most one round per ROUND_SECONDS, the first after a quiet spell
at once), each round one `publications` frame written to every subscriber
with `websockets.broadcast`. Nothing is authenticated, stored, sequenced,
conflated or bounded: a reader that stops reading has its output buffered
without limit, and a resume gets nothing back.

It speaks the subset of the topic protocol the bench's readers use:
`{"type": "subscribe", "topic": T}` answers `{"type": "subscribed", "topic":
T, "epoch": "bare"}`, then `{"type": "publications", "topic": T,
"publications": [{"offset", "key", "data"}, …]}`. The publisher PUBLISHes
each entry's JSON to CHANNEL.

Run: REDIS_URL=redis://… python bench/baselines/bare_topic.py PORT
"""

import asyncio
import json
import os
import sys

import redis.asyncio as redis
import websockets

CHANNEL = "bare-topic"
ROUND_SECONDS = 0.02  # django_realtime's TOPICS_ROUND_SECONDS default

subscribers: set = set()
topics: dict = {}  # connection -> topic


async def handler(ws) -> None:
    try:
        async for raw in ws:
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if isinstance(frame, dict) and frame.get("type") == "subscribe":
                topic = str(frame.get("topic"))
                topics[ws] = topic
                await ws.send(json.dumps({"type": "subscribed", "topic": topic, "epoch": "bare"}))
                subscribers.add(ws)
    finally:
        subscribers.discard(ws)
        topics.pop(ws, None)


async def hand_out(url: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    waiting: list[str] = []
    arrived = asyncio.Event()

    async def read() -> None:
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    waiting.append(message["data"])
                    arrived.set()
        finally:
            arrived.set()  # a lost Redis ends the server, not a wait forever

    reader = asyncio.create_task(read())
    loop = asyncio.get_running_loop()
    last = 0.0
    while not reader.done():
        await arrived.wait()
        wait = last + ROUND_SECONDS - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        arrived.clear()
        entries, waiting[:] = waiting[:], []
        last = loop.time()
        if not entries or not subscribers:
            continue
        topic = next(iter(topics.values()))
        text = (
            '{"type":"publications","topic":'
            + json.dumps(topic)
            + ',"publications":['
            + ",".join(entries)
            + "]}"
        )
        websockets.broadcast(subscribers, text)
    reader.result()


async def main(port: int) -> None:
    async with websockets.serve(handler, "127.0.0.1", port, max_size=2**20, ping_interval=None):
        await hand_out(os.environ["REDIS_URL"])


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
