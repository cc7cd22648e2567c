"""The detector's per-series state: fixed-size NumPy arrays indexed by a dense series index.

Every series (one metric of one sensor) owns one row of each array: small rings of its latest
values, local medians, errors and block scales, the scale of its current block, the runs in
progress (spike, level shift, flat line), one episode record per anomaly kind and its silence
record, plus its thresholds. A row is under 2 KB and does not grow with the readings seen, so
50,000 series take well under 100 MB and a burst of a million readings for one sensor changes
nothing in size.

:meth:`SeriesState.snapshot` writes everything (thresholds included) as one ``.npz`` document
(NumPy arrays only, no pickle) and :meth:`SeriesState.restore` reads it back exactly, so
detection after a restore continues bit for bit as if nothing had happened.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from stream.detect.config import ConfigError, Structural

NONE_TS = np.iinfo(np.int64).min  # "no timestamp yet"
FORMAT = 1
N_EP = 5  # episode kinds: range, spike, level_shift, flatline, noise

# name -> (dtype, trailing shape, initial value). Shape "R" is Structural.noise_blocks.
_SPEC: dict[str, tuple[Any, tuple[int | str, ...], Any]] = {
    # thresholds (derived from the registry and the type's config)
    "min_v": (np.float64, (), -np.inf),
    "max_v": (np.float64, (), np.inf),
    "allowed_us": (np.int64, (), 0),  # silence after this long without a reading; 0 = off
    "interval_us": (np.int64, (), 0),
    "spike_z": (np.float64, (), 6.0),
    "spike_max": (np.int64, (), 3),
    "spike_confirm": (np.int64, (), 5),
    "shift_z": (np.float64, (), 4.0),
    "shift_min": (np.int64, (), 6),
    "flat_min": (np.int64, (), 20),
    "flat_min_us": (np.int64, (), 0),
    "flat_tol": (np.float64, (), 0.0),
    "noise_ratio": (np.float64, (), 3.0),
    "min_scale": (np.float64, (), 0.0),
    "resolve": (np.int64, (N_EP,), 1),
    "on": (np.bool_, (N_EP + 1,), True),
    "cfg": (np.int32, (), 0),
    # position in the series
    "last_ts": (np.int64, (), NONE_TS),  # newest in-order reading (any value)
    "last_x": (np.float64, (), np.nan),
    "n_acc": (np.int64, (), 0),  # accepted readings (in order, in range) so far
    "last_acc_ts": (np.int64, (), NONE_TS),
    "last_acc_x": (np.float64, (), np.nan),
    "reset_seq": (np.int64, (), 0),  # the baseline restarts here (after a gap)
    # baseline (see baseline.py)
    "vring": (np.float64, (6,), np.nan),  # latest values, by position % 6
    "smring": (np.float64, (16,), np.nan),  # latest local medians, by position % 16
    "ering": (np.float64, (32,), np.nan),  # latest prediction errors, by position % 32
    "sring": (np.float64, ("R",), np.nan),  # latest raw scales, by block % noise_blocks
    "last_sm": (np.float64, (), np.nan),  # local median of the latest accepted reading
    "bk_idx": (np.int64, (), -1),
    "bk_scale": (np.float64, (), np.nan),
    "bk_valid": (np.bool_, (), False),
    "bk_ratio": (np.float64, (), np.nan),
    # runs in progress (see kinds.py)
    "sp_len": (np.int64, (), 0),
    "sp_start": (np.int64, (), NONE_TS),
    "sp_last": (np.int64, (), NONE_TS),
    "sp_pz": (np.float64, (), 0.0),
    "sp_px": (np.float64, (), np.nan),
    "sp_pb": (np.float64, (), np.nan),
    "sp_pts": (np.int64, (), NONE_TS),
    "sp_iso": (np.bool_, (), False),
    "last_low": (np.int64, (), -(1 << 40)),  # position of the latest deviation
    "pd_len": (np.int64, (), 0),  # a spike waiting for calm readings after it (0: none)
    "pd_calm": (np.int64, (), 0),
    "pd_start": (np.int64, (), NONE_TS),
    "pd_last": (np.int64, (), NONE_TS),
    "pd_pts": (np.int64, (), NONE_TS),
    "pd_pz": (np.float64, (), 0.0),
    "pd_px": (np.float64, (), np.nan),
    "pd_pb": (np.float64, (), np.nan),  # position of the latest deviation
    "sh_len": (np.int64, (), 0),
    "sh_sign": (np.int8, (), 0),
    "sh_seq": (np.int64, (), 0),
    "sh_ts": (np.int64, (), NONE_TS),
    "sh_ref": (np.float64, (), np.nan),
    "cd_seq": (np.int64, (), -1),  # level-shift candidate waiting for its check
    "cd_ts": (np.int64, (), NONE_TS),
    "cd_ref": (np.float64, (), np.nan),
    "cd_sign": (np.int8, (), 0),
    "fl_len": (np.int64, (), 0),
    "fl_start": (np.int64, (), NONE_TS),
    # one episode record per kind
    "ep_open": (np.bool_, (N_EP,), False),
    "ep_start": (np.int64, (N_EP,), NONE_TS),
    "ep_last": (np.int64, (N_EP,), NONE_TS),
    "ep_clean": (np.int64, (N_EP,), 0),
    "ep_clear": (np.int64, (N_EP,), NONE_TS),
    "ep_n": (np.int64, (N_EP,), 0),
    "ep_score": (np.float64, (N_EP,), 0.0),
    "ep_stat": (np.float64, (N_EP,), np.nan),
    "ep_x": (np.float64, (N_EP,), np.nan),
    "ep_base": (np.float64, (N_EP,), np.nan),
    "ep_pts": (np.int64, (N_EP,), NONE_TS),
    "ep_first_x": (np.float64, (N_EP,), np.nan),
    # silence
    "si_open": (np.bool_, (), False),
    "si_start": (np.int64, (), NONE_TS),
    "si_x": (np.float64, (), np.nan),
}
_SCALARS = ("front", "watermark", "jump_from", "jump_to", "clock", "checked")
KEY_SCHEMA = {"sensor": pl.String, "metric": pl.String, "idx": pl.Int64}


class SeriesState:
    """Arrays of all series, growing by doubling as new series appear."""

    def __init__(self, structural: Structural, capacity: int = 1024) -> None:
        self.structural = structural
        self.n = 0
        self.a: dict[str, npt.NDArray[Any]] = {}
        self.sensors: list[str] = []
        self.metrics: list[str] = []
        self.units: list[str] = []
        self.series_ids = np.full(0, -1, dtype=np.int64)  # dense idx -> caller's series id
        self.versions: list[str] = []  # config versions, indexed by "cfg"
        self.scalars: dict[str, int] = dict.fromkeys(_SCALARS, int(NONE_TS))
        self.keys = pl.DataFrame(schema=KEY_SCHEMA)
        self._alloc(capacity)

    def __getattr__(self, name: str) -> npt.NDArray[Any]:
        try:
            return self.__dict__["a"][name]
        except KeyError:
            raise AttributeError(name) from None

    def _shape(self, rows: int, trail: tuple[int | str, ...]) -> tuple[int, ...]:
        size = {"R": self.structural.noise_blocks}
        return (rows, *(size[t] if isinstance(t, str) else t for t in trail))

    def _alloc(self, capacity: int) -> None:
        for name, (dtype, trail, fill) in _SPEC.items():
            new = np.full(self._shape(capacity, trail), fill, dtype=dtype)
            old = self.a.get(name)
            if old is not None:
                new[: self.n] = old[: self.n]
            self.a[name] = new
        ids = np.full(capacity, -1, dtype=np.int64)
        ids[: self.n] = self.series_ids[: self.n]
        self.series_ids = ids

    @property
    def capacity(self) -> int:
        return len(self.series_ids)

    def add(
        self, sensors: list[str], metrics: list[str], series_ids: npt.NDArray[np.int64] | None
    ) -> npt.NDArray[np.int64]:
        """Register new series (not already known); returns their dense indices."""
        k = len(sensors)
        if self.n + k > self.capacity:
            cap = self.capacity
            while cap < self.n + k:
                cap *= 2
            self._alloc(cap)
        idx = np.arange(self.n, self.n + k, dtype=np.int64)
        self.sensors.extend(sensors)
        self.metrics.extend(metrics)
        self.units.extend([""] * k)
        if series_ids is not None:
            self.series_ids[idx] = series_ids
        self.n += k
        self.keys = pl.concat(
            [
                self.keys,
                pl.DataFrame({"sensor": sensors, "metric": metrics, "idx": idx}, schema=KEY_SCHEMA),
            ]
        )
        return idx

    # --- snapshot -------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        header = {
            "format": FORMAT,
            "structural": self.structural.as_dict(),
            "n": self.n,
            "scalars": self.scalars,
            "versions": self.versions,
        }
        arrays: dict[str, npt.NDArray[Any]] = {k: v[: self.n] for k, v in self.a.items()}
        arrays["_sensors"] = np.asarray(self.sensors, dtype=np.str_)
        arrays["_metrics"] = np.asarray(self.metrics, dtype=np.str_)
        arrays["_units"] = np.asarray(self.units, dtype=np.str_)
        arrays["_series_ids"] = self.series_ids[: self.n]
        arrays["_header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        # an .npz (np.load reads it, no pickle), deflated at level 1: most of the state is NaN
        # or 0 and compresses ~10x at a quarter of the cost of the default level
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w") as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def restore(cls, blob: bytes, structural: Structural) -> SeriesState:
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            header = json.loads(bytes(data.pop("_header")).decode())
        except (ValueError, KeyError, OSError) as e:
            raise ConfigError(f"not a detector snapshot: {e}") from None
        if header.get("format") != FORMAT:
            raise ConfigError(f"snapshot format {header.get('format')} is not {FORMAT}")
        if header["structural"] != structural.as_dict():
            raise ConfigError(
                "the snapshot was taken with other structural settings "
                f"({header['structural']}) than this detector's ({structural.as_dict()}); "
                "start from an empty state instead"
            )
        n = int(header["n"])
        st = cls(structural, capacity=max(1024, n))
        missing = set(_SPEC) - set(data)
        if missing:
            raise ConfigError(f"snapshot lacks arrays {sorted(missing)}")
        for name in _SPEC:
            st.a[name][:n] = data[name]
        st.n = 0
        sensors = [str(s) for s in data["_sensors"]]
        metrics = [str(m) for m in data["_metrics"]]
        st.add(sensors, metrics, data["_series_ids"].astype(np.int64))
        st.units = [str(u) for u in data["_units"]]
        st.scalars = {**dict.fromkeys(_SCALARS, int(NONE_TS)),
                      **{k: int(v) for k, v in header["scalars"].items()}}  # fmt: skip
        st.versions = list(header["versions"])
        return st
