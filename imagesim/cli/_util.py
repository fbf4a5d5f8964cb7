"""Shared CLI formatting, as docker prints things.

* ``human_size``: docker's ``units.HumanSizeWithPrecision`` (decimal units, ``77.8MB``,
  ``0B``, ``1.2kB``);
* ``time_ago`` / ``human_duration``: docker's ``units.HumanDuration`` (``2 minutes ago``,
  ``About an hour ago``, ``3 weeks ago``);
* ``Table``: docker's tab-aligned tables (``tabwriter`` min width 10, padding 3);
* ``render``: the ``--format`` option: ``table`` (default columns), ``table TEMPLATE``,
  ``json`` (one JSON object per line, as docker 24+), or a Go-template subset
  (``{{.Field}}``, ``{{json .}}``, ``{{json .Field}}``, ``{{upper .F}}``, ``{{lower .F}}``,
  ``{{println}}``; ``\\t`` and ``\\n`` escapes);
* ``truncate``: docker's ellipsis (``…``) truncation;
* ``store_of(ctx)``: the ``Store`` for the command's ``--root``.

Every container, volume and registry command may import this module.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import click

from ..units import bytes_size, human_duration, human_size  # noqa: F401 (re-exported)


def parse_time(value: str | float | _dt.datetime | None) -> _dt.datetime | None:
    """A time from RFC 3339 text (nanoseconds allowed), a Unix timestamp or a datetime."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    from ..image import parse_time as _parse
    return _parse(value)


def time_ago(value: str | float | _dt.datetime | None,
             now: _dt.datetime | None = None) -> str:
    """``2 minutes ago`` (docker's CREATED column); ``N/A`` for an unknown time."""
    t = parse_time(value)
    if t is None:
        return "N/A"
    now = now or _dt.datetime.now(_dt.UTC)
    return human_duration(max(0.0, (now - t).total_seconds())) + " ago"


def docker_time(value: str | float | _dt.datetime | None) -> str:
    """``2023-10-25 10:53:51 +0000 UTC``: how docker prints ``CreatedAt``."""
    t = parse_time(value)
    if t is None:
        return ""
    return t.strftime("%Y-%m-%d %H:%M:%S %z") + " " + (t.tzname() or "UTC")


def truncate(text: str, width: int) -> str:
    """Docker's ``stringutils.Ellipsis``: cut to ``width`` characters ending in ``…``."""
    if width <= 0 or len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[:width - 1] + "…"


class Table:
    """Columns aligned as docker's ``tabwriter`` (min width 10, padding 3); the last column
    is not padded."""

    def __init__(self, headers: Sequence[str] | None = None, *, minwidth: int = 10,
                 padding: int = 3) -> None:
        self.headers = list(headers) if headers is not None else None
        self.rows: list[list[str]] = []
        self.minwidth = minwidth
        self.padding = padding

    def add(self, *cells: Any) -> None:
        self.rows.append(["" if c is None else str(c) for c in cells])

    def lines(self) -> list[str]:
        rows = ([self.headers] if self.headers is not None else []) + self.rows
        if not rows:
            return []
        ncols = max(len(r) for r in rows)
        widths = [0] * ncols
        for r in rows:
            for i, cell in enumerate(r[:-1] if len(r) == ncols else r):
                widths[i] = max(widths[i], len(cell))
        out = []
        for r in rows:
            parts = []
            for i, cell in enumerate(r):
                if i == len(r) - 1:
                    parts.append(cell)
                else:
                    parts.append(cell.ljust(max(self.minwidth, widths[i] + self.padding)))
            out.append("".join(parts).rstrip() if r and r[-1] == "" else "".join(parts))
        return out

    def print(self, out: TextIO | None = None) -> None:
        out = out if out is not None else sys.stdout
        for line in self.lines():
            print(line, file=out)


# -- --format -----------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def _lookup(obj: Any, dotted: str) -> Any:
    if dotted in (".", ""):
        return obj
    value = obj
    for part in dotted.lstrip(".").split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
    return value


def _text(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        if isinstance(value, dict):
            return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in value.items()) + "]"
        return "[" + " ".join(_text(v) for v in value) + "]"
    return str(value)


def template(fmt: str, obj: Any) -> str:
    """Render a Go-template subset against ``obj`` (a mapping or an object)."""
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")

    def action(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        words = expr.split()
        if not words:
            return ""
        fn = words[0]
        if fn == "json":
            arg = words[1] if len(words) > 1 else "."
            return json.dumps(_lookup(obj, arg), separators=(",", ":"))
        if fn == "println":
            return "\n"
        if fn in ("upper", "lower", "title") and len(words) > 1:
            text = _text(_lookup(obj, words[1]))
            return {"upper": text.upper(), "lower": text.lower(),
                    "title": text.title()}[fn]
        if fn == "truncate" and len(words) > 2:
            return _text(_lookup(obj, words[1]))[:int(words[2])]
        if fn == "join" and len(words) > 2:
            value = _lookup(obj, words[1]) or []
            sep = words[2].strip('"')
            return sep.join(_text(v) for v in value)
        if fn.startswith("."):
            return _text(_lookup(obj, fn))
        raise click.UsageError(f"template: unsupported action {{{{{expr}}}}}")

    return _ACTION.sub(action, fmt)


def render(rows: Sequence[Mapping[str, Any]], fmt: str | None, columns: Sequence[tuple[str,
           str]], out: TextIO | None = None, *, quiet_field: str | None = None,
           quiet: bool = False) -> None:
    """Print ``rows`` as docker does for ``--format``: ``None``/``table`` gives the default
    table of ``columns`` (``(HEADER, Field)`` pairs), ``table TEMPLATE`` a table of the
    template's fields, ``json`` one JSON object per row, anything else the template per
    row. ``quiet`` prints only ``quiet_field``."""
    out = out if out is not None else sys.stdout
    if quiet and quiet_field:
        for r in rows:
            print(r.get(quiet_field, ""), file=out)
        return
    if fmt is None or fmt.strip() == "" or fmt.strip() == "table":
        t = Table([h for h, _ in columns])
        for r in rows:
            t.add(*(r.get(f, "") for _, f in columns))
        t.print(out)
        return
    if fmt.strip() == "json":
        for r in rows:
            print(json.dumps(dict(r), separators=(",", ":")), file=out)
        return
    if fmt.startswith("table"):
        body = fmt[len("table"):].strip()
        cells = body.replace("\\t", "\t").split("\t")
        headers = []
        names = {f: h for h, f in columns}
        for cell in cells:
            fields = re.findall(r"\{\{\s*\.(\w+)\s*\}\}", cell)
            headers.append(" ".join(_header_of(f, names) for f in fields) if fields else cell)
        t = Table(headers)
        for r in rows:
            t.add(*(template(c, r) for c in cells))
        t.print(out)
        return
    for r in rows:
        print(template(fmt, r), file=out)


def _header_of(field: str, names: Mapping[str, str]) -> str:
    if field in names:
        return names[field]
    return re.sub(r"(?<!^)(?=[A-Z])", " ", field).upper()


def print_json(value: Any, out: TextIO | None = None) -> None:
    """Pretty JSON as ``docker inspect`` prints it (4-space indent)."""
    out = out if out is not None else sys.stdout
    print(json.dumps(value, indent=4, ensure_ascii=False), file=out)


def store_of(ctx: click.Context) -> Any:
    """The ``Store`` for this command line's ``--root``."""
    from ..store import Store

    root = None
    c: click.Context | None = ctx
    while c is not None:
        if isinstance(c.obj, dict) and "root" in c.obj:
            root = c.obj["root"]
            break
        c = c.parent
    return Store(root)


def confirm(prompt: str, force: bool) -> bool:
    """docker's ``Are you sure you want to continue? [y/N]``; True with ``force``."""
    if force:
        return True
    click.echo(prompt, nl=False)
    click.echo(" Are you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def stderr_is_tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def each(items: Iterable[Any], fn: Callable[[Any], None]) -> int:
    """Run ``fn`` on every item, printing ``Error response from daemon: MSG`` for each
    failure as docker does for multi-argument commands; returns the number of failures."""
    from ..errors import ImageSimError

    failures = 0
    for item in items:
        try:
            fn(item)
        except ImageSimError as e:
            failures += 1
            click.echo(f"Error response from daemon: {e}", err=True)
    return failures
