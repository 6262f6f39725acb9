"""How long a simulated tagging job processes: fixed by default, or growing with its assets and their size.

Why: adaptive polling can only be measured against work whose duration depends on what was asked,
with noise the scheduler does not know. A job PROCESSes for

    (processing_s + processing_per_asset_s * sum of its assets' sizes) * exp(N(0, processing_noise_sigma))

An asset's size is a relative factor: ``sim_size=<factor>`` in its URL's query when given (a test or a
benchmark says how big each asset is), else, with ``hash_asset_sizes``, a factor from 0.5 to 2 (log-uniform)
from SHA-256 of the URL, so the same URL is always the same size; else 1. With ``processing_per_asset_s`` and
``processing_noise_sigma`` at 0 (the defaults) every job takes exactly ``processing_s``, as before.
"""

from __future__ import annotations

import hashlib
import math
import random
from urllib.parse import parse_qs, urlsplit

from simulator.config import SimulatorConfig

SIZE_PARAM = "sim_size"
_HASHED_RANGE = (0.5, 2.0)


def asset_size(url: str, hashed: bool = False) -> float:
    """The relative size of one asset (1 is an average one), a pure function of its URL."""
    try:
        raw = parse_qs(urlsplit(url).query).get(SIZE_PARAM)
    except ValueError:
        raw = None
    if raw:
        try:
            size = float(raw[0])
        except ValueError:
            size = -1.0
        if math.isfinite(size) and size >= 0:
            return size
    if not hashed:
        return 1.0
    fraction = int.from_bytes(hashlib.sha256(url.encode("utf-8")).digest()[:8], "big") / 2**64
    low, high = _HASHED_RANGE
    return low * (high / low) ** fraction


def processing_seconds(urls: list[str], config: SimulatorConfig, rng: random.Random) -> float:
    """The PROCESSING time of a new job (see the module docstring)."""
    seconds = config.processing_s
    if config.processing_per_asset_s:
        seconds += config.processing_per_asset_s * sum(asset_size(u, config.hash_asset_sizes) for u in urls)
    if config.processing_noise_sigma:
        seconds *= math.exp(rng.gauss(0.0, config.processing_noise_sigma))
    return seconds
