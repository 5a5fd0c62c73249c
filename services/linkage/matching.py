"""The hub's side of linkage: an index of clinics' linkage keys, and FHIR match grades.

The hub sees only keyed digests. Candidates are the records that share at least one token
with the new one (blocking); each is scored field by field from the Dice similarity of the
two records' field filters, with Fellegi-Sunter weights, and graded by score, shared tokens and
disagreements. Precision comes first, because a wrong link sends one person's records
to a clinic treating somebody else: ``certain`` needs near-identical encodings *and* agreeing
name-and-birth-date evidence; everything weaker is at most ``probable`` and goes to the two
clinics for review, never merged on its own.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from referral_hub.linkage.linkage_keys import SCHEME_VERSION, LinkageKeys


class MatchGrade(enum.StrEnum):
    """FHIR's match-grade value set (http://terminology.hl7.org/CodeSystem/match-grade)."""

    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"
    CERTAINLY_NOT = "certainly-not"


STRONG_TOKENS: Final = frozenset({"name-dob", "sorted-names-dob", "phonetic-dob"})
"""Tokens that by themselves say "same names, same birth date"."""
FIELD_WEIGHTS: Final = {
    "given": (8.0, 6.0, -2.6),
    "family": (8.0, 7.0, -2.7),
    "birth": (13.0, 2.0, -5.0),
    "sex": (1.0, 0.0, -8.0),
    "postcode": (8.0, 1.0, -2.7),
    "address": (10.0, 2.7, -4.0),
    "phone": (10.0, 0.0, -1.9),
}
"""Fellegi-Sunter weights, log2(m/u), for a field that agrees exactly, closely, or not at all.

Estimated on FEBRL 1-3 and the synthetic set (m from true pairs, u from random pairs) and
capped, so that no single agreement (a shared address, say) outweighs two disagreements.
"""
EXACT: Final = 0.95
CLOSE: Final = 0.70


@dataclass(frozen=True, slots=True)
class GradingPolicy:
    """Thresholds on the summed field weights, tuned on FEBRL 1-3 and the synthetic set (docs/linkage.md)."""

    certain: float = 35.0
    certain_tokens: int = 2
    probable: float = 22.0
    possible: float = 5.0


def dice(left: int, right: int) -> float:
    """Dice coefficient of two Bloom filters held as integers."""
    total = left.bit_count() + right.bit_count()
    return 2 * (left & right).bit_count() / total if total else 0.0


def field_score(left: dict[str, int], right: dict[str, int]) -> tuple[float, int]:
    """Summed weights over the fields both records carry, and how many of given name and birth date disagree."""
    total = 0.0
    disagreements = 0
    for name, (exact, close, differ) in FIELD_WEIGHTS.items():
        if name not in left or name not in right:
            continue
        similarity = dice(left[name], right[name])
        if similarity >= EXACT:
            total += exact
        elif similarity >= CLOSE:
            total += close
        else:
            total += differ
            disagreements += name in {"given", "birth"}
    return total, disagreements


def grade(score: float, shared: frozenset[str], disagreements: int, policy: GradingPolicy) -> MatchGrade:
    """The grade of one candidate from its field score, the tokens it shares and its disagreements.

    A twin shares family name, birth date, address and phone but not the given name; a parent
    and child of the same name share all but the birth date. Such a disagreement caps the grade
    at ``possible`` (a review), whatever the rest says.
    """
    if disagreements:
        floor = policy.possible if disagreements == 1 else policy.probable
        return MatchGrade.POSSIBLE if score >= floor else MatchGrade.CERTAINLY_NOT
    strong = bool(shared & STRONG_TOKENS)
    if score >= policy.certain and strong and len(shared) >= policy.certain_tokens:
        return MatchGrade.CERTAIN
    if score >= policy.probable:
        return MatchGrade.PROBABLE
    if score >= policy.possible:
        return MatchGrade.POSSIBLE
    return MatchGrade.CERTAINLY_NOT


@dataclass(frozen=True, slots=True)
class Candidate:
    """One indexed record compared with a new one."""

    record: str
    score: float
    shared: frozenset[str]
    grade: MatchGrade


@dataclass(slots=True)
class LinkageIndex:
    """Keys per record id, with an inverted index from (recipe, digest) to record ids.

    A lookup touches only the records that share a token, so its cost depends on how common
    the new person's tokens are, not on how many patients the network knows.
    """

    policy: GradingPolicy = field(default_factory=GradingPolicy)
    _blocks: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    _records: dict[str, tuple[dict[str, int], dict[str, str]]] = field(default_factory=dict)

    def __len__(self) -> int:
        """How many records are indexed."""
        return len(self._records)

    def add(self, record: str, keys: LinkageKeys) -> None:
        """Index (or re-index) one record's keys."""
        self.remove(record)
        self._records[record] = ({k: int(v, 16) for k, v in keys.fields.items()}, dict(keys.tokens))
        for recipe, digest in keys.tokens.items():
            self._blocks[(recipe, digest)].add(record)

    def remove(self, record: str) -> None:
        """Forget one record; unknown ids are ignored."""
        known = self._records.pop(record, None)
        if known is None:
            return
        for recipe, digest in known[1].items():
            block = self._blocks.get((recipe, digest))
            if block is not None:
                block.discard(record)
                if not block:
                    del self._blocks[(recipe, digest)]

    def candidates(self, keys: LinkageKeys) -> list[Candidate]:
        """Every record sharing a token with ``keys``, best first; keys of another scheme match nothing."""
        if keys.scheme != SCHEME_VERSION:
            return []
        shared: dict[str, set[str]] = defaultdict(set)
        for recipe, digest in keys.tokens.items():
            for record in self._blocks.get((recipe, digest), ()):
                shared[record].add(recipe)
        mine = {k: int(v, 16) for k, v in keys.fields.items()}
        found = []
        for record, recipes in shared.items():
            score, disagreements = field_score(mine, self._records[record][0])
            agreed = frozenset(recipes)
            found.append(Candidate(record, score, agreed, grade(score, agreed, disagreements, self.policy)))
        found.sort(key=lambda c: (-c.score, c.record))
        return found

    def best(self, keys: LinkageKeys) -> Candidate | None:
        """The strongest candidate above ``certainly-not``, or ``None``."""
        for candidate in self.candidates(keys):
            if candidate.grade is not MatchGrade.CERTAINLY_NOT:
                return candidate
            break
        return None
