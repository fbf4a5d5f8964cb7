"""Sizes and durations as docker prints them (its go-units package): one place for the CLI and
for the library modules that format container state."""

from __future__ import annotations

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def _g(value: float, precision: int) -> str:
    """Go's ``%.*g``: at most ``precision`` significant digits, no trailing zeros."""
    text = f"{value:.{precision}g}"
    if "e" in text:
        mant, _, exp = text.partition("e")
        sign = exp[0]
        digits = exp[1:].lstrip("0").rjust(2, "0")
        text = f"{mant}e{sign}{digits}"
    return text


def human_size(size: float, precision: int = 3) -> str:
    """Docker's size text: ``HumanSizeWithPrecision(size, precision)`` (``docker images``,
    ``history`` and ``ps -s`` use 3; ``system df`` uses 4)."""
    return _scaled(size, 1000.0, _UNITS, precision)


def bytes_size(size: float) -> str:
    """Binary units (``1.5MiB``): docker's ``BytesSize``, used in progress lines."""
    return _scaled(size, 1024.0, _BINARY_UNITS, 4)


def _scaled(size: float, step: float, units: tuple[str, ...], precision: int) -> str:
    size = float(size)
    i = 0
    while size >= step and i < len(units) - 1:
        size /= step
        i += 1
    return f"{_g(size, precision)}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's ``units.HumanDuration``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(hours / 24 / 365)} years"
