"""Metrics of a host in the Prometheus text format, and structured JSON logs.

The text format (``text/plain; version=0.0.4``) is a few lines per metric, so it is
written here from the runtime's counters rather than through a client library's global
registry (which would mix hosts of one process). Names follow Prometheus' conventions:
prefix ``avm_``, base units (seconds), counters end in ``_total``.

Logs: :func:`json_logger` gives the ``avm.host`` logger a handler writing one JSON
object per line (``{"ts", "level", "logger", "event", ...fields}``); the host logs its
start and stop, the HTTP API's address, failed batches and failed commits.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["Histogram", "render", "json_logger", "JsonFormatter", "log", "LOGGER"]

LOGGER = "avm.host"
log = logging.getLogger(LOGGER)

#: Bucket bounds (seconds) of the commit latency: from 100 µs (memory) to seconds (fsync
#: on a slow disk).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)
#: Bucket bounds of the group-commit size (commit requests per SQLite transaction).
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """A cumulative histogram; ``observe`` may be called from the store's writer thread."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, x: float) -> None:
        i = 0
        for i, b in enumerate(self.bounds):  # noqa: B007 - i is the bucket found
            if x <= b:
                break
        else:
            i = len(self.bounds)
        with self._lock:
            self.counts[i] += 1
            self.sum += x
            self.count += 1

    def lines(self, name: str) -> list[str]:
        with self._lock:
            counts, total, n = list(self.counts), self.sum, self.count
        out, acc = [], 0
        for b, c in zip((*self.bounds, float("inf")), counts, strict=True):
            acc += c
            le = "+Inf" if b == float("inf") else _num(b)
            out.append(f'{name}_bucket{{le="{le}"}} {acc}')
        out.append(f"{name}_sum {_num(total)}")
        out.append(f"{name}_count {n}")
        return out


def _num(x: float) -> str:
    return repr(float(x)) if isinstance(x, float) else str(x)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(host: Any) -> str:
    """The ``/metrics`` page of ``host`` (an :class:`avm.host.Host`)."""
    rt = host._rt
    c = rt.counters
    stats = rt.committed.stats
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, v in samples:
            out.append(f"{name}{labels} {_num(v)}")

    metric("avm_batches_total", "counter", "Batches applied since the host started.",
           [("", c["batches"])])
    metric("avm_batch_failures_total", "counter", "Batches that failed since the host started.",
           [("", c["failures"])])
    metric("avm_drops_total", "counter", "Batches dropped since the host started.",
           [("", c["drops"])])
    metric("avm_interrupts_total", "counter", "Batches interrupted since the host started.",
           [("", c["interrupts"])])
    metric("avm_steps_total", "counter", "Scheduler steps run since the host started.",
           [("", c["steps"])])
    metric("avm_commits_total", "counter", "Store commits since the host started.",
           [("", rt.store.commits)])
    metric("avm_commit_requests_total", "counter",
           "Commit requests handed to the writer since the host started.",
           [("", c["commits_requested"])])
    metric("avm_committed_batches_total", "counter",
           "Batches applied by outcome, as committed in the store (since it was created).",
           [(f'{{outcome="{k[6:]}"}}', v) for k, v in sorted(stats.items())
            if k.startswith("batch.")])
    metric("avm_committed_drops_total", "counter",
           "Batches dropped by reason, as committed in the store (since it was created).",
           [(f'{{reason="{_label(k[5:])}"}}', v) for k, v in sorted(stats.items())
            if k.startswith("drop.")])
    net = rt.net
    depth: dict[str, int] = {}
    for chan, _seq in net.pending.keys():
        dest = chan[1]
        m = net.machines.get(dest) if type(dest) is bytes else None
        name = m.name if m is not None else "?"
        depth[name] = depth.get(name, 0) + 1
    metric("avm_queued_batches", "gauge", "Batches queued for all machines.",
           [("", len(net.pending))])
    metric("avm_machine_queued_batches", "gauge", "Batches queued per machine (non-empty).",
           [(f'{{machine="{_label(k)}"}}', v) for k, v in sorted(depth.items())])
    metric("avm_machines", "gauge", "Machines in the host, by status.",
           [(f'{{status="{s}"}}', n) for s, n in sorted(_statuses(host).items())])
    metric("avm_machines_resident", "gauge",
           "Machines in memory (the others are evicted to the store, loaded on demand).",
           [("", len(net.machines))])
    metric("avm_machine_loads_total", "counter",
           "Evicted machines loaded back from the store since the host started.",
           [("", rt.loads)])
    metric("avm_machine_evictions_total", "counter",
           "Machines evicted from memory since the host started.", [("", rt.evictions)])
    out.append("# HELP avm_commit_latency_seconds Time from handing a commit to the writer "
               "until it is durable.")
    out.append("# TYPE avm_commit_latency_seconds histogram")
    out.extend(rt.commit_latency.lines("avm_commit_latency_seconds"))
    out.append("# HELP avm_group_commit_size Commit requests carried by one store transaction.")
    out.append("# TYPE avm_group_commit_size histogram")
    out.extend(rt.group_size.lines("avm_group_commit_size"))
    metric("avm_up", "gauge", "1 while the host accepts work, 0 after a failed commit.",
           [("", 0 if rt.failed is not None else 1)])
    return "\n".join(out) + "\n"


def _statuses(host: Any) -> dict[str, int]:
    return host.statuses()  # type: ignore[no-any-return]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            d.update(fields)
        if record.exc_info:
            d["exception"] = self.formatException(record.exc_info)
        return json.dumps(d, default=str, sort_keys=False)


def json_logger(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send the host's logs to ``stream`` (default stderr) as JSON lines; returns the handler."""
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(JsonFormatter())
    log.addHandler(h)
    log.setLevel(level)
    return h


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``name`` with structured ``fields``."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields})
