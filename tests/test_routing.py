from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamapp.core.enrich import enrich
from streamapp.core.errors import ConfigError
from streamapp.core.output import OutputDocument
from streamapp.core.routing import HEADER_NAMES, Router, headers_for, load_rules, message_key

GOLDEN_INPUTS = Path(__file__).parent / "golden" / "inputs"


def doc_for(name: str, source_name: str = "prod-us") -> OutputDocument:
    return enrich(
        (GOLDEN_INPUTS / f"{name}.json").read_bytes(),
        source_name=source_name,
        ingested_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


USER_CREATE = doc_for("user_create")  # user_access, create, user
TEAM_CREATE = doc_for("team_create", source_name="prod-eu")  # teams_and_escalation
TEAM_MEMBER = doc_for("team_update")  # user_access, update, team


def test_headers_are_the_contract_headers_in_order() -> None:
    assert HEADER_NAMES == ("source_name", "action", "resource_type", "category")
    assert headers_for(USER_CREATE) == [
        ("source_name", b"prod-us"),
        ("action", b"create"),
        ("resource_type", b"user"),
        ("category", b"user_access"),
    ]


def test_message_key_is_the_root_resource_so_its_changes_stay_in_order() -> None:
    assert message_key(TEAM_CREATE) == b"team:PXASDFE"
    assert message_key(USER_CREATE) == b"user:PD_USER_999"
    # a team-role change about a user is filed under the team, like the record itself
    assert message_key(doc_for("team_update__pdrecord_user_role_on_team")) == b"team:PD_TEAM123"


def test_no_rules_route_nowhere() -> None:
    router = Router.from_toml_text("")
    assert router.topics_for(USER_CREATE) == []
    assert router.extra_topics == []


def test_matchers_are_anded_and_values_ored() -> None:
    router = Router.from_toml_text(
        """
        [[routes]]
        topic = "access"
        category = "user_access"
        action = ["create", "delete"]

        [[routes]]
        topic = "eu"
        source = ["prod-eu", "prod-ap"]

        [[routes]]
        topic = "teams"
        resource_type = ["team_reference", "schedule"]
        """
    )
    assert router.topics_for(USER_CREATE) == ["access"]
    assert router.topics_for(TEAM_CREATE) == ["eu", "teams"]
    assert router.topics_for(TEAM_MEMBER) == ["teams"]  # user_access but an update
    assert router.extra_topics == ["access", "eu", "teams"]


def test_a_rule_without_matchers_takes_everything_and_topics_are_deduplicated() -> None:
    router = Router.from_toml_text(
        """
        [[routes]]
        topic = "all"
        [[routes]]
        topic = "access"
        category = ["user_access"]
        [[routes]]
        topic = "all"
        action = "create"
        """
    )
    assert router.topics_for(USER_CREATE) == ["all", "access"]
    assert router.topics_for(TEAM_CREATE) == ["all"]
    assert router.extra_topics == ["all", "access"]


def test_load_rules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text('[[routes]]\ntopic = "pagerduty_audit_logs.user_access"\n')
    assert load_rules(path).extra_topics == ["pagerduty_audit_logs.user_access"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[[routes]]\ntopic = \n", "not valid TOML"),
        ('routes = "x"\n', "routes"),
        ('[[route]]\ntopic = "a"\n', "'route'"),
        ("[[routes]]\ncategory = 'user_access'\n", "routes[0].topic: missing"),
        ('[[routes]]\ntopic = ""\n', "routes[0].topic"),
        ("[[routes]]\ntopic = 7\n", "routes[0].topic"),
        ('[[routes]]\ntopic = "a b"\n', "routes[0].topic"),
        ('[[routes]]\ntopic = ".."\n', "routes[0].topic"),
        (f'[[routes]]\ntopic = "{"x" * 250}"\n', "routes[0].topic"),
        ('[[routes]]\ntopic = "a"\n[[routes]]\ntopic = "b"\nfoo = 1\n', "routes[1].foo"),
        ('[[routes]]\ntopic = "a"\naction = 1\n', "routes[0].action"),
        ('[[routes]]\ntopic = "a"\naction = ["create", 2]\n', "routes[0].action"),
        ('[[routes]]\ntopic = "a"\nsource = []\n', "routes[0].source"),
        ('[[routes]]\ntopic = "a"\nresource_type = [""]\n', "routes[0].resource_type"),
        ('[[routes]]\ntopic = "a"\ncategory = "user_acess"\n', "routes[0].category"),
        ('[[routes]]\ntopic = "a"\n[routes.category]\nx = 1\n', "routes[0].category"),
    ],
)
def test_bad_rules_are_refused_in_one_line_naming_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert named in message
    assert "\n" not in message


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"routes\.toml: cannot read"):
        load_rules(tmp_path / "routes.toml")
