"""C{--log-format json}: the log as one JSON object per line, for log shippers.

Each line holds C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{message}
(the event's text, formatted), C{system} and C{format} (the event's format
string, the same for every event of its kind), a C{traceback} for a
failure, and every field of the event under its own name; a value JSON
cannot hold is given as its C{repr}.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any, Mapping

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, formatEvent
from twisted.python.logfile import LogFile

# Fields of Twisted's own, given under the names above or left out.
_OWN = frozenset({
    "log_logger", "log_source", "log_format", "log_level", "log_namespace",
    "log_time", "log_failure", "log_system", "log_text", "log_io", "log_trace",
    "log_legacy", "log_flattened",
})


def event_as_json(event: LogEvent) -> str:
    """One log event as one line of JSON, without its line end."""
    record: dict[str, Any] = {
        key: _jsonable(value) for key, value in event.items() if key not in _OWN
    }
    level = event.get("log_level")
    when = event.get("log_time")
    record.update(
        time=None if when is None else datetime.fromtimestamp(when, timezone.utc).isoformat(
            timespec="milliseconds"
        ),
        level=getattr(level, "name", None),
        namespace=event.get("log_namespace"),
        message=formatEvent(event),
        system=_jsonable(event.get("log_system")),
        format=_jsonable(event.get("log_format")),
    )
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, allow_nan=False)


def _jsonable(value: object) -> object:
    """C{value} if JSON can hold it as it is, else its C{repr}."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def json_observer(out: IO[str]) -> ILogObserver:
    """An observer writing every event to C{out} as a line of JSON."""
    return FileLogObserver(out, lambda event: event_as_json(event) + "\n")


def twistd_log_file(twistd: Mapping[str, Any] | None) -> IO[str] | None:
    """Where twistd, given its options C{twistd}, would write its log; None for syslog.

    As twistd does it: standard output for C{--logfile -}, or without
    C{--logfile} in the foreground (C{-n}); else the file named, by default
    C{twistd.log}. Standard output is taken now, before twistd sends what is
    printed to the log.
    """
    if twistd is None:
        return sys.stdout
    if twistd.get("syslog") or twistd.get("logger"):
        return None
    name = twistd.get("logfile")
    if name == "-" or (not name and twistd.get("nodaemon")):
        return sys.stdout
    return LogFile.fromFullPath(name or "twistd.log")  # type: ignore[return-value]
