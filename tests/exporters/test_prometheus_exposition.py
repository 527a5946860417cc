"""/metrics under load: scrapes share renders, wait in bounded numbers, connections capped."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from pipeline.aggregation import Aggregation
from pipeline.exporters.prometheus import AggregationCollector, MetricsServer
from tests.helpers.otlp_sink import free_port

OM = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def big() -> Iterator[tuple[MetricsServer, Aggregation, list[int]]]:
    agg = Aggregation()
    hist = agg.histogram("h_seconds", "h", ("a", "b"), tuple(float(b) for b in range(14)), 4000)
    for i in range(1000):  # ~1.6 MB of exposition
        hist.observe((f"model-{i}", "x" * 40), 1.5)
    refused: list[int] = []
    server = MetricsServer(
        AggregationCollector(agg),
        f"127.0.0.1:{free_port()}",
        max_connections=4,
        on_refuse=lambda: refused.append(1),
    )
    server.start()
    yield server, agg, refused
    server.shutdown()


def test_concurrent_scrapes_share_a_render(
    big: tuple[MetricsServer, Aggregation, list[int]],
) -> None:
    server, agg, _ = big
    url = f"http://127.0.0.1:{server.port}/metrics"
    codes: Counter[int] = Counter()
    bodies: set[bytes] = set()
    lock = threading.Lock()

    def scrape() -> None:
        with httpx.Client(timeout=60) as c:
            r = c.get(url, headers={"Accept": OM})
        with lock:
            codes[r.status_code] += 1
            if r.status_code == 200:
                bodies.add(r.content)
            else:
                assert r.headers["Retry-After"] == "1"

    threads = [threading.Thread(target=scrape) for _ in range(4)]  # as many as connections
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes[200] >= 1 and set(codes) <= {200, 503}, codes
    assert len(bodies) == 1 and len(next(iter(bodies))) > 1 << 20
    assert server.exposition.renders <= 2  # not one per scrape
    # once the cached render is stale, a scrape sees new data
    time.sleep(server.exposition.ttl_s + 0.1)
    agg.families[0].observe(("new-model", "y"), 1.0)
    text = httpx.get(url, headers={"Accept": OM}, timeout=60).text
    assert 'a="new-model"' in text


def test_the_metrics_port_takes_a_bounded_number_of_connections(
    big: tuple[MetricsServer, Aggregation, list[int]],
) -> None:
    server, _, refused = big
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.3)  # the server took them (a thread each)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        assert refused == [1]
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5).status_code == 200
