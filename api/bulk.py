"""Parsing and validating a bulk sensor upload (JSON array or CSV) as a whole.

Pure functions: the route reads the body, these turn it into ``SensorCreate`` column dicts
and a list of per-row errors. Nothing is written unless the whole upload is valid.

CSV: a header row, then one sensor per row. Columns (any order; only the first four are
required): ``sensor_id, type, lat, lon, municipality, gateway_id, name, height_m, status,
visibility, metadata`` (``metadata`` a JSON object). An empty cell is a value left out.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from api.registry_schemas import SensorCreate

CSV_COLUMNS = (
    "sensor_id",
    "type",
    "lat",
    "lon",
    "municipality",
    "gateway_id",
    "name",
    "height_m",
    "status",
    "visibility",
    "metadata",
)
CSV_REQUIRED = ("sensor_id", "type", "lat", "lon")
_LOCATION = ("lat", "lon", "height_m")
MAX_ERRORS = 200  # per response; the count of all is given too

_SENSOR = TypeAdapter(SensorCreate)


class UploadRejected(ValueError):
    """The upload as a whole is unusable (not JSON, no header, too many rows)."""


@dataclass
class Upload:
    """An upload's rows in ``SensorCreate`` input shape, with the CSV line of each."""

    rows: list[Any]
    lines: list[int] | None = None  # CSV only: the line where each row starts


@dataclass
class Checked:
    valid: list[dict[str, Any]] = field(default_factory=list)  # column dicts
    index: list[int] = field(default_factory=list)  # the upload row of each valid one
    errors: list[dict[str, Any]] = field(default_factory=list)


def parse_json(body: bytes, max_rows: int) -> Upload:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UploadRejected(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise UploadRejected("the JSON is nested too deeply") from None
    if not isinstance(data, list):
        raise UploadRejected('send a JSON array of sensors: [{"sensor_id": ...}, ...]')
    _check_count(len(data), max_rows)
    return Upload(data)


def parse_csv(body: bytes, max_rows: int) -> Upload:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UploadRejected(f"the CSV is not UTF-8: {e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UploadRejected(
            "the CSV is empty: it needs a header row and one row per sensor"
        ) from None
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [c for c in CSV_REQUIRED if c not in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if unknown or missing or dupes:
        problems = []
        if unknown:
            problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if dupes:
            problems.append(f"repeated column(s) {', '.join(dupes)}")
        raise UploadRejected(
            f"CSV header: {'; '.join(problems)}. Columns: {', '.join(CSV_COLUMNS)} "
            f"({', '.join(CSV_REQUIRED)} required)"
        )
    rows: list[Any] = []
    lines: list[int] = []
    try:
        line = reader.line_num + 1
        for cells in reader:
            if not any(c.strip() for c in cells):  # blank line
                line = reader.line_num + 1
                continue
            _check_count(len(rows) + 1, max_rows)
            rows.append(_csv_row(header, cells))
            lines.append(line)
            line = reader.line_num + 1
    except csv.Error as e:
        raise UploadRejected(f"malformed CSV at line {reader.line_num}: {e}") from None
    _check_count(len(rows), max_rows)
    return Upload(rows, lines)


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) != len(header):
        return {"__cells__": f"the row has {len(cells)} cells and the header {len(header)}"}
    out: dict[str, Any] = {}
    location: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=True):
        value = cell.strip()
        if value == "":
            continue
        if name in _LOCATION:
            location[name] = value
        elif name == "metadata":
            try:
                out[name] = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                out[name] = "<not a JSON object>"  # reported as a row error by check_rows
        else:
            out[name] = value
    out["location"] = location
    return out


def _check_count(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise UploadRejected(
            f"an upload holds at most {max_rows} sensors (MEETNET_API_BULK_MAX_ROWS); split it"
        )
    if n == 0:
        raise UploadRejected("the upload holds no sensors")


def check_rows(upload: Upload) -> Checked:
    """Validate every row; collect each row's errors (loc ``["body", row, field...]``,
    0-based ``row``; ``line`` for CSV)."""
    out = Checked()
    is_csv = upload.lines is not None
    for i, raw in enumerate(upload.rows):
        if isinstance(raw, dict) and "__cells__" in raw:
            out.errors.append(row_error(upload, i, (), "csv_row", raw["__cells__"], None))
            continue
        try:
            sensor = _SENSOR.validate_python(raw)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                if is_csv and loc[:1] == ("location",) and len(loc) > 1:
                    loc = loc[1:]  # CSV columns are flat: lat, not location.lat
                msg = err["msg"]
                if is_csv and err["type"] == "dict_type" and loc == ("metadata",):
                    msg = 'metadata must be a JSON object, e.g. {"street": "Veldstraat"}'
                out.errors.append(row_error(upload, i, loc, err["type"], msg, err.get("input")))
            continue
        out.valid.append(sensor.columns())
        out.index.append(i)
    return out


def row_error(
    upload: Upload, i: int, loc: tuple[Any, ...], kind: str, msg: str, value: Any
) -> dict[str, Any]:
    err: dict[str, Any] = {"type": kind, "loc": ["body", i, *loc], "msg": msg, "row": i + 1}
    if upload.lines is not None:
        err["line"] = upload.lines[i]
    if isinstance(value, str | int | float | bool) or value is None:
        err["input"] = value
    return err
