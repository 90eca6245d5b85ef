"""Dates written the ways people write them -> ISO ``YYYY-MM-DD``: the demo's data.

Every sample is (text, iso) for a calendar date between 1900-01-01 and 2099-12-31, written in
one of ``FORMATS`` (weekday names are always the true weekday of the date) and in one of three
letter cases (as written, lower, UPPER).

A fixed, seeded set of calendar dates (``HELDOUT_FRACTION`` of all dates, plus 2026-11-26, the
README's example) is held out entirely: ``training_sample`` never produces them, and
``heldout_dates`` draws only from them, so no (date, format) pair of the held-out set is ever
seen in training.
"""
from __future__ import annotations

import bisect
import datetime as _dt
import random
from typing import List, Tuple

__all__ = ["FORMATS", "render", "training_sample", "heldout_dates", "is_heldout", "all_characters",
           "FIRST_DATE", "LAST_DATE"]

FIRST_DATE = _dt.date(1900, 1, 1)
LAST_DATE = _dt.date(2099, 12, 31)
HELDOUT_FRACTION = 0.05
HELDOUT_SEED = 20261126
ALWAYS_HELDOUT = (_dt.date(2026, 11, 26),)

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
MONTHS_SHORT = [m[:3] for m in MONTHS]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS_SHORT = [w[:3] for w in WEEKDAYS]


def ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fields(d: _dt.date) -> dict:
    return {
        "d": d.day, "dd": f"{d.day:02d}", "m": d.month, "mm": f"{d.month:02d}", "y": f"{d.year:04d}",
        "month": MONTHS[d.month - 1], "mon": MONTHS_SHORT[d.month - 1],
        "weekday": WEEKDAYS[d.weekday()], "wd": WEEKDAYS_SHORT[d.weekday()], "dth": ordinal(d.day),
    }


# name -> template over _fields(date)
FORMATS = {
    "d_month_y": "{d} {month} {y}",                # 26 November 2026
    "mon_d_y": "{mon} {d}, {y}",                   # Nov 26, 2026
    "month_d_y": "{month} {d}, {y}",               # November 26, 2026
    "the_dth_of_month_y": "the {dth} of {month} {y}",  # the 26th of November 2026
    "dd/mm/y": "{dd}/{mm}/{y}",                    # 26/11/2026
    "y/mm/dd": "{y}/{mm}/{dd}",                    # 2026/11/26
    "dd.mm.y": "{dd}.{mm}.{y}",                    # 26.11.2026
    "weekday_month_d_y": "{weekday}, {month} {d}, {y}",  # Thursday, November 26, 2026
    "wd_d_mon_y": "{wd} {d} {mon} {y}",            # Thu 26 Nov 2026
    "dth_mon_y": "{dth} {mon} {y}",                # 26th Nov 2026
    "d_mon_y": "{d} {mon} {y}",                    # 26 Nov 2026
    "month_dth_y": "{month} {dth}, {y}",           # November 26th, 2026
    "weekday_d_month_y": "{weekday} {d} {month} {y}",  # Thursday 26 November 2026
    "d/m/y": "{d}/{m}/{y}",                        # 6/3/2026 (unpadded, day first)
    "d.m.y": "{d}.{m}.{y}",                        # 6.3.2026
    "d-mon-y": "{d}-{mon}-{y}",                    # 26-Nov-2026
    "y-mm-dd": "{y}-{mm}-{dd}",                    # 2026-11-26 (already ISO)
}
FORMAT_NAMES = list(FORMATS)
CASES = ("as_is", "lower", "upper")
CASE_WEIGHTS = (2, 1, 1)


def render(d: _dt.date, fmt: str, case: str = "as_is") -> str:
    text = FORMATS[fmt].format(**_fields(d))
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case != "as_is":
        raise ValueError(f"unknown case {case!r}")
    return text


def iso(d: _dt.date) -> str:
    return d.isoformat()


_N_DAYS = (LAST_DATE - FIRST_DATE).days + 1
_heldout_ordinals = None
_train_ordinals = None


def _split():
    global _heldout_ordinals, _train_ordinals
    if _heldout_ordinals is None:
        all_ords = list(range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1))
        rng = random.Random(HELDOUT_SEED)
        held = set(rng.sample(all_ords, int(round(HELDOUT_FRACTION * _N_DAYS))))
        held.update(d.toordinal() for d in ALWAYS_HELDOUT)
        _heldout_ordinals = sorted(held)
        _train_ordinals = [o for o in all_ords if o not in held]
    return _heldout_ordinals, _train_ordinals


def is_heldout(d: _dt.date) -> bool:
    held, _ = _split()
    o = d.toordinal()
    i = bisect.bisect_left(held, o)
    return i < len(held) and held[i] == o


def _sample(rng: random.Random, ordinals) -> Tuple[str, str]:
    d = _dt.date.fromordinal(rng.choice(ordinals))
    fmt = rng.choice(FORMAT_NAMES)
    case = rng.choices(CASES, weights=CASE_WEIGHTS)[0]
    return render(d, fmt, case), iso(d)


def training_sample(rng: random.Random) -> Tuple[str, str]:
    """One (text, iso) pair from the training dates (never a held-out date)."""
    return _sample(rng, _split()[1])


def heldout_dates(n: int = 1000, seed: int = 1126) -> List[Tuple[str, str]]:
    """n (text, iso) pairs drawn (deterministically for a seed) from the held-out dates only."""
    rng = random.Random(seed)
    held, _ = _split()
    return [_sample(rng, held) for _ in range(n)]


def all_characters() -> List[str]:
    """Every character any sample (text or iso) can contain, sorted."""
    chars = set("0123456789 ,./-")
    for word in MONTHS + WEEKDAYS + ["the", "of", "st", "nd", "rd", "th"]:
        chars.update(word)
        chars.update(word.lower())
        chars.update(word.upper())
    return sorted(chars)
