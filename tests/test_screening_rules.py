"""The contraindication rule pack: every rule triggers, and has a near miss that does not."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from referral_hub.contracts.alerts import TriggerKind
from referral_hub.contracts.base import Modality
from referral_hub.screening.rules import Findings, Rule, Treatment, load_rules, screen

PACK = load_rules()


def findings_for(rule: Rule, text: str) -> Findings:
    if rule.trigger_kind is TriggerKind.MEDICATION:
        return Findings(medications=(text,))
    if rule.trigger_kind is TriggerKind.EVENT:
        return Findings(events=(text,))
    return Findings(conditions=(text,))


def other_modality(rule: Rule) -> Modality:
    return next(m for m in Modality if m is not rule.modality)


@pytest.mark.parametrize("rule", PACK.rules, ids=lambda rule: rule.id)
def test_rule_triggers_on_its_term_inside_a_clinical_phrase(rule: Rule) -> None:
    findings = findings_for(rule, f"Patient reports {rule.terms[0].upper()} since last month")
    treatment = Treatment(rule.modality, rule.techniques[:1])

    assert rule.id in {match.rule.id for match in screen(PACK, findings, treatment)}


@pytest.mark.parametrize("rule", PACK.rules, ids=lambda rule: rule.id)
def test_rule_does_not_trigger_for_another_modality(rule: Rule) -> None:
    findings = findings_for(rule, rule.terms[0])

    assert rule.id not in {match.rule.id for match in screen(PACK, findings, Treatment(other_modality(rule)))}


@pytest.mark.parametrize("rule", [r for r in PACK.rules if r.techniques], ids=lambda rule: rule.id)
def test_technique_specific_rule_does_not_trigger_for_other_techniques(rule: Rule) -> None:
    findings = findings_for(rule, rule.terms[0])
    gentle = Treatment(rule.modality, ("gentle range of motion exercises",))

    assert rule.id not in {match.rule.id for match in screen(PACK, findings, gentle)}


def test_a_term_inside_another_word_is_not_a_match() -> None:
    matches = screen(PACK, Findings(conditions=("advt-unrelated",)), Treatment(Modality.MASSAGE))

    assert "dvt-massage-limb" not in {match.rule.id for match in matches}


def test_unnamed_techniques_are_screened_conservatively() -> None:
    matches = screen(PACK, Findings(medications=("warfarin 5 mg daily",)), Treatment(Modality.MASSAGE))

    assert [match.rule.id for match in matches] == ["anticoag-deep-massage"]
    assert matches[0].finding == "warfarin 5 mg daily"


def test_the_pack_has_at_least_25_sourced_rules_covering_every_modality() -> None:
    assert len(PACK.rules) >= 25
    assert {rule.modality for rule in PACK.rules} == set(Modality)
    assert all(rule.source in PACK.sources and rule.rationale for rule in PACK.rules)


def test_hubctl_rules_json_lists_every_rule_with_its_fields() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "referral_hub.cli", "rules", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["rules"]
    assert [rule["id"] for rule in listed] == [rule.id for rule in PACK.rules]
    assert {"id", "trigger_kind", "terms", "modality", "techniques", "severity", "rationale", "source"} <= set(
        listed[0]
    )
