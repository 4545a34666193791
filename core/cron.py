"""Cron expressions and their next run, in a time zone: the one cron parser of the project.

The heartbeat schedule (``schedule: {cron, timezone}`` of a flow), the API and dashboard
("next run") and ``adf spin manifest`` (the cron trigger's ``cron_expression``) all parse
with :func:`parse_cron`. Standard library only: it imports and evaluates UTC and fixed-offset
schedules inside a Spin component, where no time zone database exists.

Syntax (the classic five fields, as in Vixie cron / cronie)::

    ┌ minute (0-59)
    │ ┌ hour (0-23)
    │ │ ┌ day of month (1-31)
    │ │ │ ┌ month (1-12 or JAN-DEC)
    │ │ │ │ ┌ day of week (0-7 or SUN-SAT; 0 and 7 are Sunday)
    0 6 * * 1-5

Each field is ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from
``a`` to the field's end), or a comma-separated list of these. Names are case-insensitive.
``?`` in a day field means ``*``. ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``) and ``@hourly`` stand for their usual expressions. A sixth field
in front — seconds, 0-59 — is accepted too (the form the Spin cron trigger takes).

Day of month and day of week: when both are restricted (neither begins with ``*``), a day
matches when *either* does — ``0 0 1,15 * MON`` runs on the 1st, the 15th and every Monday —
when one begins with ``*``, the other decides (Vixie cron's rule; ``*/2`` counts as
unrestricted there, as in Vixie cron).

Time zones and daylight saving (:meth:`CronSchedule.next_after`): the expression is read in
the wall-clock time of its zone.

* A wall time that does not exist (the hour skipped when clocks go forward) runs once, at
  the first instant after the gap — as Vixie cron runs the jobs of a skipped hour right
  after the change. Several skipped wall times give that one run, not several.
* A wall time that occurs twice (the hour repeated when clocks go back) runs once, at its
  first occurrence; the repeated hour runs nothing a second time. A job every 15 minutes
  therefore pauses for the repeated hour: a schedule that must tick at fixed real intervals
  is a ``run_interval`` or a cron schedule in UTC.

Example::

    >>> import datetime as dt
    >>> s = parse_cron("0 6 * * 1-5", "Europe/Berlin")    # doctest: +SKIP
    >>> s.next_after(dt.datetime(2026, 3, 27, 6, 0, tzinfo=dt.UTC)).isoformat()  # doctest: +SKIP
    '2026-03-30T06:00:00+02:00'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CronError",
    "CronSchedule",
    "UnknownTimeZoneError",
    "named_zones",
    "needs_zone_database",
    "parse_cron",
    "resolve_timezone",
    "schedule_text",
    "spec_schedule_text",
    "split_schedule_text",
    "to_spin_cron",
]

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

#: (name, lowest, highest, names of the values from lowest on)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: The longest day of month of each month (February: in a leap year).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: How far :meth:`CronSchedule.next_after` looks ahead: a 29 February may be eight years away.
_HORIZON_YEARS = 30
_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")


class CronError(ValueError):
    """A cron expression or time zone that cannot be used; the message says which field and why."""


#: the names :func:`resolve_timezone` reads as UTC
_UTC_NAMES = ("", "UTC", "Z", "Etc/UTC", "utc")


class UnknownTimeZoneError(CronError):
    """A time zone name not in the time zone database (or no database on this host)."""


def needs_zone_database(name: str | None) -> bool:
    """Whether ``name`` is a zone of the time zone database (``Europe/Berlin``), not UTC or a fixed
    offset (``+02:00``), which :func:`resolve_timezone` makes without one."""
    return not (name is None or name in _UTC_NAMES or (isinstance(name, str) and _OFFSET_RE.match(name)))


def resolve_timezone(name: str | None) -> dt.tzinfo:
    """The ``tzinfo`` of ``name``: ``UTC`` (also ``None``, ``""``, ``Z``, ``Etc/UTC``), a fixed
    offset ``+02:00`` / ``UTC-05:30``, or an IANA name (``Europe/Berlin``) from :mod:`zoneinfo`.

    UTC and fixed offsets need no time zone database, so they work everywhere — inside a
    Spin component too, which has none."""
    if name is None or name in _UTC_NAMES:
        return dt.UTC
    if not isinstance(name, str):
        raise UnknownTimeZoneError(
            f"timezone: must be a string such as 'Europe/Berlin', got {type(name).__name__}"
        )
    m = _OFFSET_RE.match(name)
    if m:
        sign, hours, minutes = m.groups()
        if int(hours) > 23 or int(minutes) > 59:
            raise UnknownTimeZoneError(f"timezone: offset {name!r} is out of range (at most ±23:59)")
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
        return dt.timezone(-delta if sign == "-" else delta)
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        available = zoneinfo.available_timezones()
        hint = (
            "this host has no time zone database: use UTC or a fixed offset like +02:00, or install the "
            "`tzdata` package"
            if not available
            else "an IANA name such as 'Europe/Berlin' or 'America/New_York'"
        )
        raise UnknownTimeZoneError(f"timezone: unknown time zone {name!r} ({hint})") from exc


def _value(text: str, part: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    where = f"{name} {part!r}" + ("" if text == part else f": {text!r}")
    if text.isdigit():
        n = int(text)
        if low <= n <= high:
            return n
        raise CronError(
            f"{where} is out of range ({low}-{high})"
            if text != part
            else f"{where}: out of range ({low}-{high})"
        )
    upper = text.upper()
    if names and upper in names:
        return names.index(upper) + low
    allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
    raise CronError(
        f"{where} is not a value ({allowed})" if text != part else f"{where}: not a value ({allowed})"
    )


def _parse_part(part: str, name: str, low: int, high: int, names: tuple[str, ...]) -> set[int]:
    base, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or not 1 <= int(step_text) <= high:
            raise CronError(f"{name} {part!r}: the step after '/' must be a number from 1 to {high}")
        step = int(step_text)
    if base in ("*", "?"):
        first, last = low, high
    else:
        a, dash, b = base.partition("-")
        if not a or (dash and not b):
            raise CronError(f"{name} {part!r}: a range is a-b (both ends given)")
        first = _value(a, part, name, low, high, names)
        last = _value(b, part, name, low, high, names) if dash else (high if slash else first)
        if first > last:
            raise CronError(f"{name} {part!r}: the range runs backwards ({first} > {last})")
    return set(range(first, last + 1, step))


def _parse_field(text: str, index: int) -> frozenset[int]:
    name, low, high, names = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} {text!r}: an empty item in the list")
        values |= _parse_part(part, name, low, high, names)
    if index == 5 and 7 in values:  # 7 is Sunday too
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression in a time zone (see the module doc); make one with :func:`parse_cron`."""

    expression: str
    timezone: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    has_seconds: bool
    tz: dt.tzinfo = field(compare=False, repr=False, default=dt.UTC)

    # -- matching, on wall-clock (naive) times ----------------------------------------

    def _day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, when: dt.datetime) -> bool:
        """Whether the wall time ``when`` (read in the schedule's zone when aware) is one of the expression's."""
        if when.tzinfo is not None:
            when = when.astimezone(self.tz).replace(tzinfo=None)
        return (
            when.month in self.months
            and self._day_matches(when.date())
            and when.hour in self.hours
            and when.minute in self.minutes
            and when.second in self.seconds
            and when.microsecond == 0
        )

    def _wall_times(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """The matching wall times strictly after the naive ``start``, in order."""
        t = start.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit = start.year + _HORIZON_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = dt.datetime(t.year + 1, 1, 1) if t.month == 12 else dt.datetime(t.year, t.month + 1, 1)
            elif not self._day_matches(t.date()):
                t = dt.datetime.combine(t.date() + dt.timedelta(days=1), dt.time())
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + dt.timedelta(minutes=1)
            elif t.second not in self.seconds:
                later = [s for s in self.seconds if s > t.second]
                t = t.replace(second=min(later)) if later else t.replace(second=0) + dt.timedelta(minutes=1)
            else:
                yield t
                t += dt.timedelta(seconds=1)

    # -- instants ----------------------------------------------------------------------

    def instant(self, wall: dt.datetime) -> dt.datetime:
        """The instant (aware, in the schedule's zone) the wall time ``wall`` runs at: its first
        occurrence when it occurs twice, the end of the gap when it does not exist."""
        first = wall.replace(tzinfo=self.tz, fold=0)
        if first.astimezone(dt.UTC).astimezone(self.tz).replace(tzinfo=None) == wall:
            return first.astimezone(self.tz)
        # In a gap: fold=0 reads it with the offset before the change, fold=1 with the one after;
        # the change itself lies between those two readings.
        late = wall.replace(tzinfo=self.tz, fold=1).astimezone(dt.UTC)
        early = first.astimezone(dt.UTC)
        low, high = min(early, late), max(early, late)
        while high - low > dt.timedelta(seconds=1):  # the offset changes once inside [low, high]
            mid = low + (high - low) / 2
            mid = mid.replace(microsecond=0)
            if mid.astimezone(self.tz).utcoffset() == low.astimezone(self.tz).utcoffset():
                low = mid
            else:
                high = mid
        return high.astimezone(self.tz)

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first run strictly after the instant ``after`` (aware; naive is UTC), as an aware
        datetime in the schedule's zone. Successive calls never return one instant twice and
        never skip a matching wall time (see the module doc for daylight saving)."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=dt.UTC)
        start = after.astimezone(self.tz).replace(tzinfo=None)
        for wall in self._wall_times(start):
            when = self.instant(wall)
            if when > after:
                return when
        raise CronError(
            f"cron {self.expression!r}: no run within {_HORIZON_YEARS} years after {after.isoformat()}"
        )

    def runs_between(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Every run strictly after ``start`` and at or before ``end``."""
        out: list[dt.datetime] = []
        when = self.next_after(start)
        while when <= end:
            out.append(when)
            when = self.next_after(when)
        return out

    def to_dict(self) -> dict[str, str]:
        return {"cron": self.expression, "timezone": self.timezone}


def _split(expression: str) -> list[str]:
    if not isinstance(expression, str):
        raise CronError(f"cron: must be a string such as '0 6 * * 1-5', got {type(expression).__name__}")
    text = expression.strip()
    if text.startswith("@"):
        macro = _MACROS.get(text.lower())
        if macro is None:
            raise CronError(f"cron {expression!r}: unknown macro; one of {', '.join(_MACROS)}")
        text = macro
    fields = text.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"cron {expression!r} has {len(fields)} field(s); give 5 (minute hour day-of-month month day-of-week, "
            "e.g. '0 6 * * 1-5') or 6 with seconds first"
        )
    return fields


def _never_runs(
    days: frozenset[int], months: frozenset[int], restricted_days: bool, restricted_weekdays: bool
) -> bool:
    """Whether a restricted day of month falls in none of the months (``0 0 30 2 *``)."""
    if not restricted_days or restricted_weekdays:
        return False
    return not any(d <= _MONTH_DAYS[m - 1] for d in days for m in months)


def parse_cron(expression: str, timezone: str | None = "UTC") -> CronSchedule:
    """Parse ``expression`` (5 fields, or 6 with seconds first, or a macro) read in ``timezone``.

    Raises :class:`CronError` naming the field and the reason, or
    :class:`UnknownTimeZoneError`."""
    fields = _split(expression)
    has_seconds = len(fields) == 6
    texts = fields if has_seconds else ["0", *fields]
    parsed = [_parse_field(text, i) for i, text in enumerate(texts)]
    for text in texts:
        if len(text) > 200:
            raise CronError(f"cron: a field of at most 200 characters, got {len(text)}")
    days_restricted = not texts[3].startswith(("*", "?"))
    weekdays_restricted = not texts[5].startswith(("*", "?"))
    if _never_runs(parsed[3], parsed[4], days_restricted, weekdays_restricted):
        raise CronError(f"cron {expression!r}: day-of-month {texts[3]!r} never falls in month {texts[4]!r}")
    tz = resolve_timezone(timezone)
    return CronSchedule(
        expression=" ".join(expression.split()),
        timezone=timezone or "UTC",
        seconds=parsed[0],
        minutes=parsed[1],
        hours=parsed[2],
        days=parsed[3],
        months=parsed[4],
        weekdays=parsed[5],
        days_restricted=days_restricted,
        weekdays_restricted=weekdays_restricted,
        has_seconds=has_seconds,
        tz=tz,
    )


def to_spin_cron(expression: str) -> str:
    """``expression`` in the form the Spin cron trigger (spin-trigger-cron, six fields with seconds
    first) takes: a five-field expression gets ``0`` seconds in front, a macro is expanded, a
    six-field one is kept. Validated by :func:`parse_cron` first (so :class:`CronError`)."""
    parse_cron(expression)
    fields = _split(expression)
    return " ".join(fields if len(fields) == 6 else ["0", *fields])


#: the prefix that names an expression's zone in one line (cronie's ``CRON_TZ=``; ``TZ=`` too)
_TZ_PREFIXES = ("CRON_TZ=", "TZ=")


def split_schedule_text(text: str) -> tuple[str, str]:
    """``(expression, timezone)`` of a schedule written on one line: ``"0 6 * * 1-5"`` (UTC) or
    ``"CRON_TZ=Europe/Berlin 0 6 * * 1-5"`` (the zone first, as cronie and Kubernetes CronJobs
    write it; ``TZ=`` is taken too). Nothing is checked here: :func:`parse_cron` the result."""
    if not isinstance(text, str):
        raise CronError(f"cron: must be a string such as '0 6 * * 1-5', got {type(text).__name__}")
    stripped = text.strip()
    for prefix in _TZ_PREFIXES:
        if stripped.upper().startswith(prefix):
            zone, _, expression = stripped[len(prefix):].partition(" ")
            if not zone or not expression.strip():
                raise CronError(f"cron {text!r}: expected {prefix}<zone> <expression>, e.g. {prefix}Europe/Berlin 0 6 * * 1-5")
            return " ".join(expression.split()), zone
    return " ".join(stripped.split()), "UTC"


def schedule_text(expression: str, timezone: str | None = "UTC") -> str:
    """One line for ``expression`` read in ``timezone``, :func:`split_schedule_text`'s inverse:
    the expression alone in UTC, else ``CRON_TZ=<zone> <expression>``."""
    expression = " ".join(str(expression).split())
    if timezone in (None, "", "UTC"):
        return expression
    return f"CRON_TZ={timezone} {expression}"


def spec_schedule_text(spec: Mapping[str, Any]) -> str | None:
    """The one-line schedule of a flow spec's ``runtime.schedule`` (``{cron, timezone}``), or None."""
    schedule = (spec.get("runtime") or {}).get("schedule")
    if isinstance(schedule, Mapping) and isinstance(schedule.get("cron"), str):
        return schedule_text(schedule["cron"], schedule.get("timezone"))
    return None


def named_zones(schedules: Iterable[Any]) -> set[str]:
    """The zones of the time zone database that ``schedules`` name — one-line schedules
    (:func:`split_schedule_text`); seconds (``300``), UTC and fixed offsets are skipped."""
    zones = set()
    for value in schedules:
        if value is None or isinstance(value, int) or str(value).strip().isdigit():
            continue
        try:
            zone = split_schedule_text(str(value))[1]
        except CronError:
            continue
        if needs_zone_database(zone):
            zones.add(zone)
    return zones
