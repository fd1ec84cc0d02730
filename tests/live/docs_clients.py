"""
Stock Yjs clients for the shared-document tests and bench/docs.py: one Node
process running tests/js/docs_driver.mjs (the npm packages `yjs`,
`y-websocket` and `ws`), any number of Y.Doc + WebsocketProvider clients in
it, driven by JSON commands.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import websockets
from pycrdt import Doc, Text

from chat.collab import protocol

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "js" / "docs_driver.mjs"
# How much longer than a command's own timeout its reply may take (a loaded
# machine), and how long a reply may take when the command has none (Node's
# waits default to 20 s).
REPLY_SLACK_SECONDS = 15.0
DEFAULT_REPLY_SECONDS = 60.0


def node_ready() -> str | None:
    """Why the Node clients cannot run here, or None when they can."""
    if shutil.which("node") is None:
        return "node not found: install the Debian/Ubuntu package `nodejs` (make test does)"
    if not (ROOT / "node_modules" / "y-websocket").is_dir():
        return "node_modules missing: `make install` runs `npm ci`"
    return None


class NodeDocs:
    """One Node process of Yjs clients; `await docs.call("insert", id="a", …)`."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.next_req = 0
        self.reader: asyncio.Task | None = None

    async def start(self) -> NodeDocs:
        self.proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node",
            str(DRIVER),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            reply = json.loads(line)
            future = self.pending.pop(reply.get("req"), None)
            if future is not None and not future.done():
                future.set_result(reply)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the Node driver exited"))

    async def call(self, cmd: str, **args: Any) -> dict:
        """One command's reply. A `timeout` is the command's own (how long
        Node waits for what it waits for), sent to Node; the reply is awaited
        that long plus REPLY_SLACK_SECONDS, so a wait that runs out answers
        with what it saw rather than racing a timeout of ours."""
        assert self.proc is not None and self.proc.stdin is not None
        if "timeout" in args:
            timeout = float(args["timeout"]) + REPLY_SLACK_SECONDS
        else:
            timeout = DEFAULT_REPLY_SECONDS
        self.next_req += 1
        req = self.next_req
        future = asyncio.get_running_loop().create_future()
        self.pending[req] = future
        self.proc.stdin.write((json.dumps({"cmd": cmd, "req": req, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{cmd} failed in Node: {reply['error']}")
        return reply

    async def open(
        self, id: str, *, ws: str, room: str, name: str, token: str, user: str | None = None
    ) -> None:
        """A client of document `room`/`name` at the server whose /ws/ is `ws`,
        as `new WebsocketProvider(ws + "docs", "room/name", ydoc)`."""
        await self.call(
            "open",
            id=id,
            url=ws.rstrip("/") + "/docs",
            room=f"{room}/{name}",
            token=token,
            name=user,
        )

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self.reader is not None:
            await self.reader


class RawDoc:
    """A y-websocket client in Python (pycrdt, websockets) that can also send
    what no stock client would: for the hostile-input tests.

    `await RawDoc.open(server, token, "room/name")` connects and syncs (the
    server's step 1 answered with what it lacks, its step 2 applied)."""

    def __init__(self, conn: Any, ydoc: Any):
        self.conn = conn
        self.ydoc = ydoc
        self.reason = ""  # the server's close reason, once closed

    @classmethod
    async def open(cls, server: Any, token: str, path: str, ydoc: Any = None) -> RawDoc:

        conn = await websockets.connect(
            server.ws.rstrip("/") + "/docs/" + path,
            additional_headers={"Authorization": f"Token {token}"},
            max_size=2**22,
        )
        client = cls(conn, ydoc if ydoc is not None else Doc())
        await client.send(protocol.step1_message(client.ydoc.get_state()))
        while True:  # the server's step 1 first, then its step 2
            message = client._take(await asyncio.wait_for(conn.recv(), 20))
            if message.kind != protocol.SYNC:
                continue
            if message.sync_type == protocol.SYNC_STEP1:
                await client.send(protocol.step2_message(client.ydoc.get_update(message.payload)))
            elif message.sync_type == protocol.SYNC_STEP2:
                return client

    async def send(self, data: bytes | str) -> None:
        await self.conn.send(data)

    async def insert(self, text: str, index: int = 0) -> bytes:
        """Type `text` at `index` of the shared text `content`; sends the update
        and returns the whole message sent."""
        state = self.ydoc.get_state()
        self.ydoc.get("content", type=Text).insert(index, text)
        message = protocol.update_message(self.ydoc.get_update(state))
        await self.send(message)
        return message

    async def closed(self, timeout: float = 10.0) -> int | None:
        """The close code the server ends with (reading, and dropping, what comes first)."""

        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.conn.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.conn.close()

    async def received(self, seconds: float) -> list[protocol.Message]:
        """What the server sends in the next `seconds` (its updates applied)."""
        got: list[protocol.Message] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    got.append(self._take(await self.conn.recv()))
        except TimeoutError:
            pass
        return got

    async def probe(self, timeout: float = 10.0) -> int | None:
        """Ask for the awareness states: None once the server answers (the
        socket is open), or the code it closed with."""
        try:
            await self.send(bytes([protocol.QUERY_AWARENESS]))
            async with asyncio.timeout(timeout):
                while self._take(await self.conn.recv()).kind != protocol.AWARENESS:
                    pass
        except websockets.ConnectionClosed as closed:
            self.reason = closed.rcvd.reason if closed.rcvd else ""
            return closed.rcvd.code if closed.rcvd else None
        return None

    def _take(self, data: bytes | str) -> protocol.Message:
        message = protocol.parse(data if isinstance(data, bytes) else data.encode())
        if message.kind == protocol.SYNC and message.sync_type != protocol.SYNC_STEP1:
            try:
                self.ydoc.apply_update(message.payload)
            except BaseException as exc:
                # pycrdt's Rust core can panic on what Yjs applies: this
                # client starts again from an empty document.
                if type(exc).__name__ != "PanicException":
                    raise
                self.ydoc = Doc()
        return message
