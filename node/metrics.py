"""Prometheus gauges of the chain, computed at scrape time from the node's view."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from node.view import NodeView

_GAUGES: tuple[tuple[str, str], ...] = (
    ("zkpot_chain_head_height", "Height of the head block"),
    ("zkpot_chain_head_score", "Cumulative proven score of the head block"),
    ("zkpot_chain_finalized_height", "Height of the finalized block"),
    ("zkpot_chain_round", "Current round on the genesis clock (-1 before genesis)"),
    ("zkpot_peers", "Connected peers"),
)


class ChainCollector(Collector):
    """Chain gauges computed at scrape time, so the daemon never has to keep them updated."""

    def __init__(self, view: NodeView) -> None:
        self._view = view

    def collect(self) -> Iterable[Metric]:
        v = self._view
        now_round = v.current_round()
        head = v._tip(v.store.head()).meta
        values = (
            head.height,
            head.score,
            v.finalized_height(),
            -1 if now_round is None else now_round,
            len(v._peers()),
        )
        for (name, doc), value in zip(_GAUGES, values, strict=True):
            yield GaugeMetricFamily(name, doc, value=value)

    def describe(self) -> Iterable[Metric]:
        # Names only: register() checks them for clashes without reading the store.
        return [GaugeMetricFamily(name, doc) for name, doc in _GAUGES]
