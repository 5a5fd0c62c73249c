"""The contraindication rule pack and a pure matcher.

The rules are data (``rules.json`` beside this file): each names a trigger (a condition,
medication or event, by its terms), a modality, the techniques it concerns (none means
every technique of that modality), a severity, whether it is local or systemic, the
rationale and its public source. Matching is deliberately simple and explainable: a
trigger term matches a patient finding when it appears in it as a whole phrase, after
lower-casing and treating ``-`` and ``_`` as spaces.

When a referral or plan names no techniques, a technique-specific rule still matches:
for safety the hub assumes the recipient might use any technique of the modality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import msgspec

from referral_hub.contracts.alerts import Severity, TriggerKind
from referral_hub.contracts.base import Modality
from referral_hub.errors import HubError


class RulePackError(HubError):
    """The rule file is malformed or inconsistent."""


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One known contraindication."""

    id: str
    trigger_kind: TriggerKind
    terms: tuple[str, ...]
    modality: Modality
    techniques: tuple[str, ...] = ()
    severity: Severity
    scope: str
    rationale: str
    source: str


class RulePack(msgspec.Struct, frozen=True, kw_only=True):
    """The whole rule file: citations by key, and the rules."""

    sources: dict[str, str]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Match:
    """A rule that applies, with the finding that triggered it."""

    rule: Rule
    finding: str


def normalise(text: str) -> str:
    """Lower-case, ``-``/``_`` as spaces, single spaces."""
    return " ".join(re.sub(r"[-_]", " ", text.lower()).split())


def mentions(finding: str, term: str) -> bool:
    """Whether ``term`` appears in ``finding`` as a whole phrase, ignoring case and hyphens."""
    return re.search(rf"(?<![a-z0-9]){re.escape(normalise(term))}(?![a-z0-9])", normalise(finding)) is not None


@cache
def load_rules() -> RulePack:
    """The bundled rule pack, checked for unique ids and known sources."""
    data = resources.files("referral_hub.screening").joinpath("rules.json").read_bytes()
    try:
        pack = msgspec.json.decode(data, type=RulePack)
    except msgspec.ValidationError as exc:
        msg = f"rules.json is invalid: {exc}"
        raise RulePackError(msg) from exc
    ids = [rule.id for rule in pack.rules]
    if len(ids) != len(set(ids)):
        msg = "rules.json has duplicate rule ids"
        raise RulePackError(msg)
    unknown = {rule.source for rule in pack.rules} - set(pack.sources)
    if unknown:
        msg = f"rules.json cites unknown sources: {sorted(unknown)}"
        raise RulePackError(msg)
    return pack


@dataclass(frozen=True)
class Findings:
    """What is known about the patient: free-text conditions, medications and events."""

    conditions: tuple[str, ...] = ()
    medications: tuple[str, ...] = ()
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Treatment:
    """What a referral or plan proposes: a modality and, if named, its techniques."""

    modality: Modality
    techniques: tuple[str, ...] = ()


def screen(pack: RulePack, findings: Findings, treatment: Treatment) -> list[Match]:
    """Every rule that applies to this treatment, given the patient's findings."""
    by_kind = {
        TriggerKind.CONDITION: findings.conditions,
        TriggerKind.MEDICATION: findings.medications,
        TriggerKind.EVENT: (*findings.events, *findings.conditions),
    }
    matches: list[Match] = []
    for rule in pack.rules:
        if rule.modality is not treatment.modality:
            continue
        if (
            rule.techniques
            and treatment.techniques
            and not any(mentions(planned, listed) for planned in treatment.techniques for listed in rule.techniques)
        ):
            continue
        finding = next(
            (f for f in by_kind[rule.trigger_kind] if any(mentions(f, term) for term in rule.terms)),
            None,
        )
        if finding is not None:
            matches.append(Match(rule, finding))
    return matches
