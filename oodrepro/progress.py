"""Progress in job logs: one line per tenth of the work, never carriage-return updates.

A job's log is a file read after the fact (or with `tail -f` on a cluster), where a progress bar
becomes one long line of overwritten updates; ten plain lines say how far it got and how fast.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

log = logging.getLogger("oodrepro.progress")

PARTS = 10  # lines per loop


def tenths(
    iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it", show=True
) -> Iterator:
    """Yield from `iterable`, logging "desc: k/total unit (p %), s s" each time another tenth
    of `total` (default: len(iterable)) is done; nothing when `show` is false or total unknown."""
    total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
    if not show or not total:
        yield from iterable
        return
    started, next_mark = time.perf_counter(), 1
    for done, item in enumerate(iterable, 1):
        yield item
        if done * PARTS >= next_mark * total:
            next_mark = done * PARTS // total + 1
            log.info(
                "%s: %d/%d %s (%d %%), %.1f s",
                desc,
                done,
                total,
                unit,
                100 * done // total,
                time.perf_counter() - started,
            )


def count(total: int | None, desc: str, unit: str = "B", show=True):
    """A counter for work that arrives in uneven pieces (a download's bytes): `add(n)` logs
    each tenth of `total` passed, as `tenths` does."""
    state = {"done": 0, "mark": 1, "started": time.perf_counter()}

    def add(n: int) -> None:
        state["done"] += n
        if not show or not total or state["done"] * PARTS < state["mark"] * total:
            return
        state["mark"] = state["done"] * PARTS // total + 1
        scale = 1e6 if unit == "B" else 1  # bytes shown in MB
        log.info(
            "%s: %.4g/%.4g %s (%d %%), %.1f s",
            desc,
            state["done"] / scale,
            total / scale,
            "MB" if unit == "B" else unit,
            min(100, 100 * state["done"] // total),
            time.perf_counter() - state["started"],
        )

    return add
