"""A site of its own around the package (tests/guest_site/asgi.py), and
what its views send, for tests/live/test_guest_live.py to check."""

STREAM_FRAMES = 400
STREAM_FRAME_CHARS = 64 * 1024
BIG_CHUNKS = 256  # of 64 KiB: 16 MiB


def stream_frame(n: int) -> str:
    """Frame n of the site's stream: its number, then one letter repeated."""
    return f"{n:06d}" + chr(ord("a") + n % 26) * (STREAM_FRAME_CHARS - 6)


def big_chunk(n: int) -> bytes:
    """Chunk n of the site's large HTTP response."""
    return f"{n:06d}".encode() + bytes([ord("A") + n % 26]) * (64 * 1024 - 6)
