"""Log output of the coopgrid commands: plain text for people, JSON lines for log collectors.

The coordinator logs one line per meaningful event (job submitted and
finished, worker registered and quarantined, epoch committed) at INFO, its
default level. Such a line carries the event's name and data in the record's
``extra`` (``event``, ``job``, ``worker``, ...): the JSON format puts them in
the object beside the message, so collectors need not parse text.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: attributes every LogRecord has; anything else on a record came from ``extra``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event's fields, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup(level: int = logging.WARNING, fmt: str = "text", coopgrid_level: int | None = None) -> None:
    """Log to stderr in ``fmt``; ``coopgrid_level`` lowers the level of coopgrid's own loggers only.

    Other libraries stay at ``level``: their INFO lines (HTTP clients, web3)
    are noise to an operator."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("coopgrid").setLevel(coopgrid_level if coopgrid_level is not None else logging.NOTSET)
