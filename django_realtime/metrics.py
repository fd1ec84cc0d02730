"""
Provides the Prometheus metrics of one server process, served at /metrics.

Each process exposes its own; scrape every process (they are labelled by the
scraper's instance). Names follow Prometheus conventions (units in names,
`_total` for counters).
"""

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class LoopCounter(Collector):
    """A counter for the event loop's hottest path (every frame sent): a
    plain int, where prometheus_client's Counter takes a lock on every
    increment (a twentieth of a topic frame's CPU). Incremented from the
    event loop's thread only; a rare increment from another thread could be
    lost, never the process."""

    def __init__(self, name: str, documentation: str):
        self.name, self.documentation, self.value = name, documentation, 0
        REGISTRY.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


CONNECTIONS = Gauge("realtime_connections", "Open authenticated WebSocket connections")
FRAMES_IN = Counter("realtime_frames_in_total", "Client frames received", ["type"])
_frames_in: dict[str, Any] = {}


def frame_in(kind: str) -> None:
    """FRAMES_IN for one frame of `kind` (its child kept: labels() is a lock and a lookup)."""
    child = _frames_in.get(kind)
    if child is None:
        child = _frames_in[kind] = FRAMES_IN.labels(kind)
    child.inc()


FRAMES_OUT = LoopCounter("realtime_frames_out_total", "Frames sent to clients")
MESSAGES_STORED = Counter("realtime_messages_stored_total", "Chat messages stored")
POST_BATCH_SIZE = Histogram(
    "realtime_post_batch_size",
    "Posts stored by one statement (1: a post alone, with nothing in flight)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
POST_BATCHES_SPLIT = Counter(
    "realtime_post_batches_split_total",
    "Batches of posts that stored nothing (a racing retry, a deadlock) and went one by one",
)
FANOUT_SECONDS = Histogram(
    "realtime_fanout_latency_seconds",
    "From a message's broadcast to its delivery to one connection",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAYER_ERRORS = Counter("realtime_layer_errors_total", "Channel layer calls that failed", ["op"])
RATE_LIMITED = Counter("realtime_rate_limited_total", "Refusals by a rate limit", ["kind"])
OUTPUT_OVERFLOWS = Counter(
    "realtime_output_overflows_total",
    "Connections closed because their socket stopped taking output (4413)",
)
RESUMES = Counter("realtime_resumes_total", "Joins with `since`")
RESUME_REPLAYED = Counter(
    "realtime_resume_replayed_messages_total", "Messages replayed by joins with `since`"
)
GAP_FILLS = Counter(
    "realtime_gap_fill_messages_total", "Messages a connection read from the database to fill a gap"
)
TOPIC_PUBLICATIONS = Counter("realtime_topic_publications_total", "Topic publications stored")
TOPIC_CONFLATED = Counter(
    "realtime_topic_conflated_total",
    "Publications superseded by a newer one of the same key before a slow subscriber got them",
)
LIMITS_FAIL_OPEN = Counter(
    "realtime_limits_fail_open_total",
    "Limit decisions made per process because Redis did not answer",
    ["kind"],
)
