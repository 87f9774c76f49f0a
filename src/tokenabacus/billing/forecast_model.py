"""The forecast's model: one structural time series fitted to a daily history, kept per day.

statsmodels' ``UnobservedComponents`` (a local linear trend plus a stochastic weekly seasonal
and noise, fitted by maximum likelihood with an exact diffuse start; billing/forecast.py says why
this model). A fit is all a forecast needs of statsmodels: what remains is the predicted state
and its covariance, from which the mean and variance of any weighted sum of future days follow
exactly (``moments``): the tokens of a horizon (every day weighs 1) and its cost (each day
weighs the price per token in force that day).

Fitting is the slow part (a fraction of a second per series, and statsmodels' import takes a
couple of seconds more), so fits are kept: in memory (bounded, for the gateway's /admin/forecast)
and, when the caller names a directory, on disk (for the CLI, a new process every time). A fit
is keyed by the series itself, every day's figure: a new day starts a new series and a changed
past day changes it, so a kept fit is never stale, and the bound (least recently used first)
drops yesterday's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

SEASON = 7  # days in the seasonal cycle
SPEC = f"uc:local-linear-trend:seasonal-{SEASON}:v1"  # a change of model spec is a new key
MEMORY_FITS = 512  # fits kept in memory: a day's groups many times over, each a few KB
DISK_FITS = 2048  # files kept on disk (each under 2 KB)


@dataclass(frozen=True, slots=True)
class Fitted:
    """A fitted series: the predicted state one day after its last (``a``, covariance ``P``), the
    system matrices (``Z`` design, ``T`` transition, ``RQR`` state noise, ``noise`` the
    observation's), in units of ``scale``; or ``constant``: a flat history has nothing to fit."""

    scale: float = 1.0
    constant: float | None = None
    a: tuple[float, ...] = ()
    P: tuple[tuple[float, ...], ...] = ()
    Z: tuple[float, ...] = ()
    T: tuple[tuple[float, ...], ...] = ()
    RQR: tuple[tuple[float, ...], ...] = ()
    noise: float = 0.0


def fit(series: Sequence[float], cache_dir: Path | None = None) -> Fitted | None:
    """The fitted model of ``series`` (one figure per day, oldest first); None when it cannot be
    fitted. Kept in memory, and in ``cache_dir`` when given."""
    return _kept(tuple(float(v) for v in series), str(cache_dir) if cache_dir else None)


@lru_cache(maxsize=MEMORY_FITS)
def _kept(series: tuple[float, ...], cache_dir: str | None) -> Fitted | None:
    # A pure function's memo (the key is the whole input), so one process-wide copy is safe.
    if len(series) and min(series) == max(series):
        return Fitted(constant=series[0])
    path = Path(cache_dir) / f"{_key(series)}.json" if cache_dir else None
    if path is not None and (found := _read(path)) is not None:
        return found[0]
    fitted = _fit(series)
    if path is not None:
        _write(path, fitted)
    return fitted


def _key(series: tuple[float, ...]) -> str:
    try:
        version = metadata.version("statsmodels")
    except metadata.PackageNotFoundError:
        version = "?"
    text = json.dumps([SPEC, version, series], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _read(path: Path) -> tuple[Fitted | None] | None:
    """(the kept fit or None for a series that could not be fitted), or None when not kept."""
    try:
        data = json.loads(path.read_text())
        os.utime(path)  # recently used: kept longest
    except (OSError, ValueError):
        return None
    if data is None:
        return (None,)
    try:
        return (Fitted(**{k: _tuples(v) for k, v in data.items()}),)
    except TypeError:
        return None  # written by another version: fit again


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _write(path: Path, fitted: Fitted | None) -> None:
    """Best effort: a read-only or full disk only costs the next run a fit."""
    body = None if fitted is None else {k: getattr(fitted, k) for k in Fitted.__slots__}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)  # whole or not at all, for a reader in another process
        kept = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in kept[: max(len(kept) - DISK_FITS, 0)]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _fit(series: tuple[float, ...]) -> Fitted | None:
    import numpy as np
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    arr = np.asarray(series, dtype=float)
    scale = max(float(np.abs(arr).mean()), 1.0)  # the optimizer behaves on unit-sized data
    try:
        model = UnobservedComponents(arr / scale, level="local linear trend", seasonal=SEASON)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; a failed fit shows as non-finite numbers
            res = model.fit(disp=False)
    except (ValueError, np.linalg.LinAlgError):
        return None
    f = res.filter_results
    R, Q = f.selection[:, :, 0], f.state_cov[:, :, 0]
    out = Fitted(
        scale=scale,
        a=tuple(f.predicted_state[:, -1].tolist()),
        P=tuple(map(tuple, f.predicted_state_cov[:, :, -1].tolist())),
        Z=tuple(f.design[0, :, 0].tolist()),
        T=tuple(map(tuple, f.transition[:, :, 0].tolist())),
        RQR=tuple(map(tuple, (R @ Q @ R.T).tolist())),
        noise=float(f.obs_cov[0, 0, 0]),
    )
    numbers = [*out.a, *(x for row in out.P for x in row), out.noise]
    return out if all(math.isfinite(x) for x in numbers) else None


def moments(fitted: Fitted, weights: Sequence[float]) -> tuple[float, float]:
    """Mean and variance of sum_h weights[h-1] * y_{T+h} (step 1 is the day after the history),
    exactly from the fitted state space: with a_{T+1} ~ N(a, P) the predicted state, y_{T+h} =
    Z T^{h-1} a_{T+1} + (state shocks between) + noise, so the sum is a linear combination of
    independent Gaussians.

    Plain Python, no numpy: a kept fit then answers without importing either library (the CLI's
    warm run). The state shock entering at step j+1 reaches the sum through u_j = sum over h > j of
    w_h Z T^(h-1-j), and u_j = w_(j+1) Z + u_(j+1) T, so one backward pass of small
    matrix-vector products gives every u_j (u_0 is how the predicted state reaches the sum)."""
    w = [float(x) for x in weights]
    if fitted.constant is not None:
        return fitted.constant * sum(w), 0.0
    Z, T, RQR, a, P = fitted.Z, fitted.T, fitted.RQR, fitted.a, fitted.P
    n = len(a)
    cols = list(zip(*T, strict=True))  # T's columns: (u T)[c] = u . T[:, c]
    u = [0.0] * n
    var = 0.0
    for j in range(len(w) - 1, -1, -1):
        u = [w[j] * z + _dot(u, col) for z, col in zip(Z, cols, strict=True)]
        if j and any(u):
            var += _quad(u, RQR)
    mean = _dot(u, a)
    var += _quad(u, P) + sum(x * x for x in w) * fitted.noise
    s = fitted.scale
    return mean * s, var * s * s


def _dot(x: Sequence[float], y: Sequence[float]) -> float:
    return sum(p * q for p, q in zip(x, y, strict=True))


def _quad(x: Sequence[float], m: Sequence[Sequence[float]]) -> float:
    return sum(xi * _dot(row, x) for xi, row in zip(x, m, strict=True) if xi)
