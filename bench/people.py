"""Synthetic patients for the benchmarks: realistic fields, deterministic from a seed.

No Faker: a few hundred names, area codes and ZIP prefixes with weights are enough
for realistic distributions, and generating our own keeps every draw stable
across library versions (a seed gives the same million people next year).

People come in blocks of :data:`BLOCK` drawn from a ``random.Random`` seeded by
``(seed, block)``, so person ``i`` is the same whatever the total asked for and
any block can be generated alone (chunked writers keep memory flat).

Distributions (US-like outpatient population, rounded from public figures):

* age: 0-17 14%, 18-34 20%, 35-49 18%, 50-64 23%, 65-79 18%, 80-99 7%;
* conditions (ICD-10 families) rising with age: type 2 diabetes ``e11`` ~11%
  overall (25% at 65+), hypertension ``i10`` ~30%, hyperlipidaemia ``e78`` ~25%,
  asthma ``j45`` ~8%, depression ``f32`` ~8%;
* insurance: medicare for most people 65+, otherwise commercial 58%, medicaid 28%
  (most children's coverage), self-pay 9%;
* A1c (0.1 %): every diabetic (mean 7.6, sd 1.3) and a third of the others (mean 5.4);
* contact points: email 92%, phone 78%, MRN 90%; language en 84%, es 13%.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

BLOCK = 10_000


def _words(text: str) -> list[str]:
    return text.split()


# Everything is dated relative to this moment, not "now": the same seed gives the
# same data set on any day (segments over it use the same reference date).
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)

FIRST_FEMALE = _words(
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy "
    "Betty Sandra Margaret Ashley Kimberly Emily Donna Michelle Carol Amanda Melissa Deborah "
    "Stephanie Dorothy Rebecca Sharon Laura Cynthia Amy Kathleen Angela Shirley Brenda Emma "
    "Anna Pamela Nicole Samantha Katherine Christine Helen Debra Rachel Carolyn Janet Maria "
    "Catherine Heather Diane Olivia Julie Joyce Victoria Ruth Virginia Lauren Kelly Christina "
    "Joan Evelyn Judith Andrea Hannah Megan Cheryl Jacqueline Martha Madison Teresa Gloria "
    "Sara Janice Ann Kathryn Abigail Sophia Frances Jean Alice Judy Isabella Julia Grace "
    "Amber Denise Danielle Marilyn Beverly Charlotte Natalie Theresa Diana Brittany Doris "
    "Kayla Alexis Lori Marie Guadalupe Lucía Sofía Valentina Ximena Mei Priya Aaliyah"
)
FIRST_MALE = _words(
    "James Robert John Michael David William Richard Joseph Thomas Christopher Charles "
    "Daniel Matthew Anthony Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian "
    "George Timothy Ronald Jason Edward Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan "
    "Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Patrick Frank "
    "Raymond Jack Dennis Jerry Tyler Aaron Jose Adam Nathan Henry Zachary Douglas Peter "
    "Kyle Noah Ethan Jeremy Walter Christian Keith Roger Terry Austin Sean Gerald Carl "
    "Harold Dylan Arthur Lawrence Jordan Jesse Bryan Billy Bruce Gabriel Joe Logan Alan "
    "Juan Albert Willie Elijah Wayne Randy Vincent Mason Roy Ralph Bobby Russell Bradley "
    "Philip Eugene Luis Carlos Miguel Ángel José Wei Arjun Mohammed DeShawn Tomás"
)
# Surnames with weights roughly following the US census frequency (top ones commoner).
LAST_NAMES = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright "
    "Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell "
    "Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes "
    "Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson "
    "Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood "
    "James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers "
    "Long Ross Foster Jiménez Peña Müller O'Brien Nguyễn Chen Wang Singh Kowalski"
)
EMAIL_DOMAINS = (
    ("gmail.com", 44),
    ("yahoo.com", 16),
    ("outlook.com", 9),
    ("hotmail.com", 9),
    ("icloud.com", 8),
    ("aol.com", 5),
    ("comcast.net", 4),
    ("att.net", 3),
    ("example.org", 2),
)
# (state, time zone, weight, ZIP prefixes, area codes)
REGIONS = (
    (
        "CA",
        "America/Los_Angeles",
        12,
        ("900", "902", "913", "921", "941", "945", "958"),
        ("213", "310", "415", "619", "714", "818", "916"),
    ),
    (
        "TX",
        "America/Chicago",
        9,
        ("750", "752", "770", "773", "782", "787", "799"),
        ("214", "281", "512", "713", "817", "832", "915"),
    ),
    (
        "FL",
        "America/New_York",
        7,
        ("320", "322", "327", "331", "334", "336", "339"),
        ("305", "407", "561", "727", "786", "813", "904"),
    ),
    (
        "NY",
        "America/New_York",
        6,
        ("100", "104", "112", "117", "142", "146"),
        ("212", "315", "516", "585", "718", "917"),
    ),
    ("PA", "America/New_York", 4, ("152", "170", "180", "191"), ("215", "267", "412", "717")),
    ("IL", "America/Chicago", 4, ("600", "604", "606", "617"), ("217", "312", "630", "773")),
    ("OH", "America/New_York", 4, ("430", "441", "452", "436"), ("216", "513", "614", "937")),
    ("GA", "America/New_York", 3, ("300", "303", "314", "319"), ("404", "470", "678", "912")),
    ("NC", "America/New_York", 3, ("272", "275", "282", "284"), ("704", "910", "919", "336")),
    ("MI", "America/Detroit", 3, ("480", "482", "486", "495"), ("248", "313", "517", "616")),
    ("AZ", "America/Phoenix", 2, ("850", "852", "857"), ("480", "520", "602")),
    ("WA", "America/Los_Angeles", 2, ("980", "981", "992"), ("206", "253", "509")),
    ("MA", "America/New_York", 2, ("021", "016", "024"), ("508", "617", "781")),
    ("CO", "America/Denver", 2, ("800", "802", "809"), ("303", "719", "970")),
    ("TN", "America/Chicago", 2, ("370", "372", "381"), ("615", "901", "931")),
)
AGE_BANDS = ((0, 17, 14), (18, 34, 20), (35, 49, 18), (50, 64, 23), (65, 79, 18), (80, 99, 7))
STAGES = (("active", 58), ("new", 12), ("overdue", 16), ("at-risk", 14))
LANGUAGES = (("en", 84), ("es", 13), ("vi", 1), ("zh", 1), ("ko", 1))
INSURANCE = ("medicare", "medicaid", "commercial", "self-pay")
GENDERS = ("female", "male", "other", "unknown")
CONDITIONS = ("e11", "i10", "j45", "e78", "f32")


@dataclass(frozen=True)
class Person:
    """One synthetic patient, as the services would store it (canonical values)."""

    index: int
    id: uuid.UUID
    created_at: datetime
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    mrn: str | None
    birth_date: str
    custom: dict[str, Any]
    journey_stage: str
    language: str
    timezone: str
    # The weight of this person in the event stream (0: never engages).
    activity: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def upsert_item(self) -> dict[str, Any]:
        """The person as an item of ``POST /contacts/batch`` (or an import row)."""
        item: dict[str, Any] = {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "birth_date": self.birth_date,
            "custom": dict(self.custom),
            "journey_stage": self.journey_stage,
            "language": self.language,
            "timezone": self.timezone,
        }
        if self.email:
            item["email"] = self.email
        if self.phone:
            item["phone"] = self.phone
        if self.mrn:
            item["external_ids"] = {"mrn": self.mrn}
        return item


def _weighted(pairs: tuple[tuple[Any, int], ...]) -> tuple[list[Any], list[int]]:
    values = [value for value, _ in pairs]
    cumulative, total = [], 0
    for _, weight in pairs:
        total += weight
        cumulative.append(total)
    return values, cumulative


_DOMAINS = _weighted(EMAIL_DOMAINS)
_STAGES = _weighted(STAGES)
_LANGUAGES = _weighted(LANGUAGES)
_REGIONS = _weighted(tuple((region, region[2]) for region in REGIONS))
_AGES = _weighted(tuple(((low, high), weight) for low, high, weight in AGE_BANDS))


def _zipf(names: list[str], offset: int) -> tuple[list[str], list[float]]:
    """Zipf-like cumulative weights: the first names of each list are the commonest."""
    cumulative, total = [], 0.0
    for rank in range(len(names)):
        total += 1.0 / (rank + offset)
        cumulative.append(total)
    return names, cumulative


_LAST = _zipf(LAST_NAMES, 8)
_FEMALE = _zipf(FIRST_FEMALE, 10)
_MALE = _zipf(FIRST_MALE, 10)


def ascii_fold(text: str) -> str:
    """``José O'Brien`` -> ``joseobrien``: the shape of an address people type."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


def seeded_id(rng: random.Random, moment: datetime) -> uuid.UUID:
    """A UUIDv7 (like :func:`carepost.core.database.new_id`) whose time is ``moment``
    and whose random bits come from ``rng``: ids sort by creation time, reproducibly."""
    unix_ms = int(moment.timestamp() * 1000)
    rand = rng.getrandbits(74)
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 62) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def _chance(rng: random.Random, age: int, base: float, old: float, young: float = 0.0) -> bool:
    """A condition whose prevalence rises with age: ``young`` under 18, ``base`` at
    18-64 (scaled up with age), ``old`` at 65+."""
    if age < 18:
        return rng.random() < young
    if age >= 65:
        return rng.random() < old
    return rng.random() < base * (0.4 + 1.2 * (age - 18) / 47)


def _conditions(rng: random.Random, age: int) -> list[str]:
    found = []
    if _chance(rng, age, 0.085, 0.25, 0.003):
        found.append("e11")
    if _chance(rng, age, 0.27, 0.62, 0.01):
        found.append("i10")
    if rng.random() < (0.09 if age < 18 else 0.075):
        found.append("j45")
    if _chance(rng, age, 0.22, 0.50, 0.005):
        found.append("e78")
    if rng.random() < (0.03 if age < 18 else 0.09):
        found.append("f32")
    return sorted(found)


def _insurance(rng: random.Random, age: int) -> str:
    if age >= 65:
        return "medicare" if rng.random() < 0.93 else "commercial"
    draw = rng.random()
    if age < 18:
        return "medicaid" if draw < 0.45 else ("commercial" if draw < 0.97 else "self-pay")
    if draw < 0.02:
        return "medicare"  # disability
    if draw < 0.24:
        return "medicaid"
    return "commercial" if draw < 0.90 else "self-pay"


def _phone(rng: random.Random, area_codes: tuple[str, ...]) -> str:
    exchange = rng.randint(201, 989)
    if exchange % 100 == 11:  # N11 codes are service numbers
        exchange += 1
    return f"+1{rng.choice(area_codes)}{exchange}{rng.randint(0, 9999):04d}"


def _person(rng: random.Random, index: int, seed: int) -> Person:
    female = rng.random() < 0.52
    names, cumulative = _FEMALE if female else _MALE
    first = rng.choices(names, cum_weights=cumulative)[0]
    last = rng.choices(_LAST[0], cum_weights=_LAST[1])[0]
    low, high = rng.choices(_AGES[0], cum_weights=_AGES[1])[0]
    age = rng.randint(low, high)
    birth = AS_OF.date() - timedelta(days=age * 365 + rng.randint(0, 364))
    region = rng.choices(_REGIONS[0], cum_weights=_REGIONS[1])[0]
    _state, timezone, _weight, zip_prefixes, area_codes = region
    created_at = AS_OF - timedelta(seconds=rng.randint(0, 3 * 365 * 86400))
    gender_draw = rng.random()
    gender = (
        ("female" if female else "male")
        if gender_draw < 0.985
        else ("other" if gender_draw < 0.993 else "unknown")
    )
    conditions = _conditions(rng, age)
    custom: dict[str, Any] = {
        "zip": f"{rng.choice(zip_prefixes)}{rng.randint(1, 99):02d}",
        "gender": gender,
        "insurance": _insurance(rng, age),
    }
    if conditions:
        custom["conditions"] = conditions
    if "e11" in conditions:
        custom["a1c"] = round(min(max(rng.gauss(7.6, 1.3), 5.7), 14.0), 1)
    elif rng.random() < 0.33:
        custom["a1c"] = round(min(max(rng.gauss(5.4, 0.35), 4.0), 6.4), 1)
    if rng.random() < 0.85:
        # Recent visits are commoner than old ones.
        days = int(730 * rng.random() ** 1.6)
        custom["last_visit"] = (AS_OF.date() - timedelta(days=days)).isoformat()
    local = f"{ascii_fold(first)}.{ascii_fold(last)}{index}"
    email = None
    if rng.random() < 0.92:
        email = f"{local}@{rng.choices(_DOMAINS[0], cum_weights=_DOMAINS[1])[0]}"
    phone = _phone(rng, area_codes) if rng.random() < 0.78 else None
    # A bijection of the index onto 9 digits (7919 is prime to 10): unique, random-looking.
    mrn = f"M{(index * 7919 + seed * 104729) % 1_000_000_000:09d}" if rng.random() < 0.9 else None
    # Engagement is heavy-tailed: a quarter never engage, a few engage a lot.
    activity = 0.0 if rng.random() < 0.25 else rng.lognormvariate(0.0, 1.1)
    return Person(
        index=index,
        id=seeded_id(rng, created_at),
        created_at=created_at,
        first_name=first,
        last_name=last,
        email=email,
        phone=phone,
        mrn=mrn,
        birth_date=birth.isoformat(),
        custom=custom,
        journey_stage=rng.choices(_STAGES[0], cum_weights=_STAGES[1])[0],
        language=rng.choices(_LANGUAGES[0], cum_weights=_LANGUAGES[1])[0],
        timezone=timezone,
        activity=activity,
    )


def block_rng(seed: int, block: int, stream: str = "people") -> random.Random:
    # String seeds are hashed with SHA-512 by random.Random: stable across runs and versions.
    return random.Random(f"carepost-bench:{seed}:{stream}:{block}")


def people_block(seed: int, block: int, size: int = BLOCK) -> list[Person]:
    """The first ``size`` people of block number ``block`` (each block draws its people
    in order from its own generator, so a shorter block is a prefix of the full one)."""
    rng = block_rng(seed, block)
    start = block * BLOCK
    return [_person(rng, start + offset, seed) for offset in range(min(size, BLOCK))]


def people(seed: int, count: int, *, start: int = 0) -> Iterator[Person]:
    """People ``start`` .. ``start + count - 1``, one block in memory at a time."""
    end = start + count
    for block in range(start // BLOCK, (end - 1) // BLOCK + 1 if count else 0):
        for person in people_block(seed, block, end - block * BLOCK):
            if start <= person.index < end:
                yield person


def contact_items(seed: int, n: int) -> Iterator[dict[str, Any]]:
    """``n`` upsert items with the data set's distribution (for import benchmarks).

    Item ``i`` is the data set's contact ``i``; its custom fields need the data
    set's field definitions (:func:`bench.datagen.define_fields`)."""
    for person in people(seed, n):
        yield person.upsert_item()


def birth_dates_for_age(low: int, high: int) -> tuple[date, date]:
    """The birth dates of people aged ``low``..``high`` on :data:`AS_OF` (for segment benches)."""
    today = AS_OF.date()
    return today.replace(year=today.year - high - 1) + timedelta(days=1), today.replace(
        year=today.year - low
    )
