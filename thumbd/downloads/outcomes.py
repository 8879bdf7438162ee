"""What one fetch is bounded by (`Limits`) and what it ends as (`Result`), for every module of
the download stage: the fetcher, the connections, the address policy and the files.

Failures are values (`Failure`) with a reason a person understands; only bugs raise. Inside the
fetching modules a check deep in a call ends the attempt by raising `Stop` with its result,
which `Fetcher` turns back into a value: nothing outside the fetch sees `Stop`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Downloaded:
    """The URL's body is complete, verified, and renamed to `file` (relative to incoming/)."""

    file: str
    size: int
    kind: str  # the sniffed extension: jpg, png, ...


@dataclass(frozen=True, slots=True)
class Failure:
    """The URL could not be fetched; `retry` says whether another attempt may help."""

    reason: str
    retry: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Stopped by a shutdown: nothing was written, the URL stays pending."""


Result = Downloaded | Failure | Cancelled


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on one URL: time, size, redirects ([download] in the configuration)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_bytes: int = 50_000_000
    max_redirects: int = 5
    user_agent: str = "thumbd"
    total_timeout: float = 300.0


class Stop(Exception):
    """Ends an attempt with a result (raised and caught inside a fetch only)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result)
        self.result = result
