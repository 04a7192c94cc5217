"""Cron expressions (5 fields, or 6 with seconds first) → APScheduler triggers, with cron's weekday numbers."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # APScheduler is imported by trigger(): only by a process that reads a cron schedule
    from apscheduler.triggers.base import BaseTrigger

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")  # cron: 0 and 7 are Sunday
_NUMERIC_PART = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def _weekdays(field: str) -> str:
    """Cron counts weekdays from Sunday = 0; APScheduler 3 from Monday = 0. Spell numbers as names."""
    names: list[str] = []
    for part in field.split(","):
        match = _NUMERIC_PART.match(part)
        if not match or (match.group(1) == "*" and not match.group(3)):
            names.append(part)  # names (mon-fri), '*' and '?' mean the same to both
            continue
        start = 0 if match.group(1) == "*" else int(match.group(1))
        end = 6 if match.group(1) == "*" else int(match.group(2) or start)
        step = int(match.group(3) or 1)
        if not (0 <= start <= 7 and 0 <= end <= 7 and start <= end and step > 0):
            raise ValueError(f"invalid day-of-week {part!r}: use 0-7 (0 and 7 are Sunday) or mon..sun")
        if match.group(3) and not match.group(2) and match.group(1) != "*":
            end = 6  # "1/2" means from Monday every second day
        names.extend(_CRON_DAYS[day] for day in range(start, end + 1, step))
    return ",".join(dict.fromkeys(names))


def trigger(expression: str, timezone: str = "UTC") -> BaseTrigger:
    """Parse `m h dom mon dow` or `s m h dom mon dow`; raises ValueError with a readable reason."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) == 5:
        fields.insert(0, "0")
    if len(fields) != 6:
        raise ValueError(f"expected 5 fields (minute hour day month weekday) or 6 with seconds, got {len(fields)}")
    second, minute, hour, day, month, dow = fields

    def cron(day: str, dow: str) -> CronTrigger:
        return CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(dow), timezone=timezone
        )

    if day not in ("*", "?") and dow not in ("*", "?"):
        return OrTrigger([cron(day, "*"), cron("*", dow)])  # cron fires when either day field matches
    return cron(day, dow)
