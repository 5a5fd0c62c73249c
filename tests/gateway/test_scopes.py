"""SMART scopes by the grammar (``gateway.scopes``), pure: what each request is granted."""

from __future__ import annotations

import pytest

from referral_hub.gateway import scopes

EVERYTHING = scopes.SUPPORTED_SCOPES


@pytest.mark.parametrize(
    ("asked", "granted"),
    [
        ("system/Task.read", ("system/Task.rs",)),
        ("system/Task.write", ("system/Task.cud",)),
        ("system/Task.*", ("system/Task.cruds",)),
        ("system/Task.rs", ("system/Task.rs",)),
        ("system/Task.cd", ("system/Task.cd",)),
        ("system/Task.read system/Task.write", ("system/Task.cruds",)),
        ("system/ServiceRequest.write system/ServiceRequest.s", ("system/ServiceRequest.s",)),
        ("system/Binary.cruds", ("system/Binary.r",)),
    ],
)
def test_v1_words_and_v2_letters_grant_what_they_mean(asked: str, granted: tuple[str, ...]) -> None:
    assert scopes.grant(asked, EVERYTHING) == granted


def test_a_wildcard_read_never_grants_delete() -> None:
    granted = scopes.grant("system/*.read", EVERYTHING)
    assert granted
    assert not any(set(scope.partition(".")[2]) - {"r", "s"} for scope in granted)


@pytest.mark.parametrize("asked", ["system/Task.sr", "system/Task.reads", "system/Task.", "system/Task.rr", "Task.rs"])
def test_letters_out_of_order_or_unknown_words_grant_nothing(asked: str) -> None:
    with pytest.raises(scopes.ScopeError):
        scopes.grant(asked, EVERYTHING)


@pytest.mark.parametrize("asked", ["patient/Task.rs", "user/*.read", "openid", "launch"])
def test_scopes_not_for_a_backend_service_are_left_out(asked: str) -> None:
    assert scopes.grant(f"{asked} system/Flag.r", EVERYTHING) == ("system/Flag.r",)


def test_a_search_parameter_in_a_scope_is_refused_rather_than_dropped() -> None:
    with pytest.raises(scopes.ScopeError, match="search parameter"):
        scopes.grant("system/Task.rs?status=requested", EVERYTHING)


def test_the_grant_is_within_the_clients_ceiling() -> None:
    ceiling = scopes.ceiling(["system/Task.read", "system/Flag.c"])
    assert ceiling == ("system/Task.rs", "system/Flag.c")
    assert scopes.grant("system/*.cruds", ceiling) == ceiling
    assert scopes.grant("", ceiling) == ceiling
    with pytest.raises(scopes.ScopeError):
        scopes.grant("system/Subscription.c", ceiling)


def test_a_ceiling_naming_nothing_offered_is_refused() -> None:
    with pytest.raises(scopes.ScopeError):
        scopes.ceiling(["system/Observation.read"])


def test_a_permission_is_allowed_only_by_its_own_type_and_letter() -> None:
    granted = ("system/Task.rs", "system/Flag.c")
    assert scopes.allows(granted, "Task", "r")
    assert not scopes.allows(granted, "Task", "d")
    assert not scopes.allows(granted, "Flag", "r")
    assert scopes.allows(("system/*.rs",), "Task", "s")
