"""Resource paths of OGC 18-088 §9.2 after the service root ``/sta/v1.1``::

Things                               an entity set
Things('gent-air-001')               an entity (string key; a bare 42 is the key '42')
Things('gent-air-001')/name          a property      .../name/$value   its raw value
Things('gent-air-001')/Datastreams   a navigation property (set or entity), chained:
Datastreams('gent-air-001:pm25')/Thing/Locations
.../Datastreams/$ref                 association links (selfLinks only)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from api.sta.errors import bad_request

MAX_SEGMENTS = 12
_SEGMENT = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\((.*)\))?$", re.S)


@dataclass(frozen=True)
class Segment:
    name: str
    key: str | None = None


@dataclass(frozen=True)
class ParsedPath:
    segments: tuple[Segment, ...]
    value: bool = False  # ends with /$value
    ref: bool = False  # ends with /$ref


def parse_key(text: str) -> str:
    t = text.strip()
    if len(t) >= 2 and t[0] == "'" and t[-1] == "'":
        inner = t[1:-1]
        if re.search(r"(?<!')'(?!')", inner.replace("''", "")):
            raise bad_request(f"malformed key {text!r}: a quote inside a key is written ''")
        return inner.replace("''", "'")
    if t.isdigit():
        return t
    raise bad_request(
        f"malformed key ({text}): write string keys in quotes, e.g. Things('gent-air-001')"
    )


def split_segments(path: str) -> list[str]:
    """Split on '/' outside quoted keys."""
    out, start, quoted = [], 0, False
    for i, c in enumerate(path):
        if c == "'":
            quoted = not quoted
        elif c == "/" and not quoted:
            out.append(path[start:i])
            start = i + 1
    out.append(path[start:])
    return out


def parse(path: str) -> ParsedPath:
    raw = split_segments(path.strip("/"))
    if len(raw) > MAX_SEGMENTS:
        raise bad_request(f"a resource path may have at most {MAX_SEGMENTS} segments")
    value = ref = False
    if raw and raw[-1] == "$value":
        value, raw = True, raw[:-1]
    elif raw and raw[-1] == "$ref":
        ref, raw = True, raw[:-1]
    segments = []
    for text in raw:
        if not text:
            raise bad_request("empty segment in the resource path ('//')")
        m = _SEGMENT.match(text)
        if m is None:
            raise bad_request(f"malformed path segment {text!r}")
        key = parse_key(m[2]) if m[2] is not None else None
        segments.append(Segment(m[1], key))
    if not segments:
        raise bad_request("the path names no resource")
    return ParsedPath(tuple(segments), value, ref)
