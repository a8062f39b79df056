"""Which kind of change an audit record is: one category per record, from a fixed table.

The categories answer the first question a security analyst asks of a change, "what could
this do to us?", and so group PagerDuty objects by the risk their changes carry rather than
by PagerDuty's menu structure:

======================  ==================================  ===================================
category                resource types / actions            meaning
======================  ==================================  ===================================
account_management      ip_allow_list, account,             account-wide security and
                        account_settings, api_key,          configuration: who may reach the
                        sso/saml settings, ability,         account at all and with which keys;
                        license, subdomain, addon           changes here affect everybody
user_access             user create/delete; user or team    who can sign in and what they may
                        update of a role (role, base_role,  do: users, their base and team
                        team_role, members.role,            roles, team membership (which
                        default_role), permissions,         grants the team role), login
                        license, email (the login), or      identity; what access reviews query
                        membership (members, teams)
user_profile            user update of anything else:       how a person is reached and who
                        contact methods, notification       they say they are; no change of
                        rules, name, time zone              rights
teams_and_escalation    team (other than membership and     who is paged and when: teams,
                        roles), escalation_policy,          escalation policies, on-call
                        schedule, override, rotation        schedules
service_changes         service, business_service,          what is monitored and how alerts
                        maintenance_window,                 become incidents
                        service_dependency,
                        event_orchestration, ruleset
integrations            integration, extension, webhook,    connections to outside systems:
                        webhook_subscription, app,          where data and credentials leave or
                        oauth_client, vendor                enter PagerDuty
incident_management     incident, priority, response_play,  handling of incidents themselves
                        incident_workflow, status_page,
                        postmortem
other                   anything not above                  a type we do not know yet (never an
                                                            error)
======================  ==================================  ===================================

Why ``user_access`` holds permissions too: PagerDuty attaches rights only to users (base
role) and teams (team role, granted by membership), so "who can do what" is one question
with one answer; splitting it would put half an access review in each of two categories.
Why ``user_profile`` is separate from it: most user records (contact methods, notification
rules) change no rights, and mixing them in would drown the few that do.

Only ``update`` records are promoted by their fields, and only for users and teams: a
create or delete is categorised by the object (a user created is an access change whatever
its fields; a team created with a ``default_role`` grants nobody anything yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from streamapp.core.errors import ConfigError

ACCOUNT_MANAGEMENT: Final = "account_management"
USER_ACCESS: Final = "user_access"
USER_PROFILE: Final = "user_profile"
TEAMS_AND_ESCALATION: Final = "teams_and_escalation"
SERVICE_CHANGES: Final = "service_changes"
INTEGRATIONS: Final = "integrations"
INCIDENT_MANAGEMENT: Final = "incident_management"
OTHER: Final = "other"

#: (category, resource types / actions, meaning): the table the README renders
CATEGORY_TABLE: Final[list[tuple[str, str, str]]] = [
    (
        ACCOUNT_MANAGEMENT,
        "ip_allow_list, account, account_settings, api_key, sso/saml settings, ability, "
        "license, subdomain, addon",
        "account-wide security and configuration: who may reach the account at all and "
        "with which keys",
    ),
    (
        USER_ACCESS,
        "user create/delete; user or team update of a role (role, base_role, team_role, "
        "members.role, default_role), permissions, license, email (the login), or "
        "membership (members, teams)",
        "who can sign in and what they may do: users, their base and team roles, team "
        "membership, login identity",
    ),
    (
        USER_PROFILE,
        "user update of anything else: contact methods, notification rules, name, time zone",
        "how a person is reached and who they say they are; no change of rights",
    ),
    (
        TEAMS_AND_ESCALATION,
        "team (other than membership and roles), escalation_policy, schedule, override, rotation",
        "who is paged and when: teams, escalation policies, on-call schedules",
    ),
    (
        SERVICE_CHANGES,
        "service, business_service, maintenance_window, service_dependency, "
        "event_orchestration, ruleset",
        "what is monitored and how alerts become incidents",
    ),
    (
        INTEGRATIONS,
        "integration, extension, webhook, webhook_subscription, app, oauth_client, vendor",
        "connections to outside systems: where data and credentials leave or enter PagerDuty",
    ),
    (
        INCIDENT_MANAGEMENT,
        "incident, priority, response_play, incident_workflow, status_page, postmortem",
        "handling of incidents themselves",
    ),
    (OTHER, "anything not above", "a type we do not know yet (never an error)"),
]

#: every category a document can carry, in table order
CATEGORIES: Final[tuple[str, ...]] = tuple(row[0] for row in CATEGORY_TABLE)


def check_categories(values: Iterable[str], where: str) -> None:
    """A ConfigError at ``where`` for the first of ``values`` that is not a category (the
    routes and the detection rules both match on categories)."""
    for value in values:
        if value not in CATEGORIES:
            raise ConfigError(
                f"{where}: unknown category {value[:60]!r} (one of {', '.join(CATEGORIES)})"
            )


_BY_RESOURCE_TYPE: Final[dict[str, str]] = {
    # account-wide security and configuration
    "ip_allow_list": ACCOUNT_MANAGEMENT,
    "account": ACCOUNT_MANAGEMENT,
    "account_settings": ACCOUNT_MANAGEMENT,
    "api_key": ACCOUNT_MANAGEMENT,
    "sso_settings": ACCOUNT_MANAGEMENT,
    "saml_settings": ACCOUNT_MANAGEMENT,
    "ability": ACCOUNT_MANAGEMENT,
    "license": ACCOUNT_MANAGEMENT,
    "subdomain": ACCOUNT_MANAGEMENT,
    "addon": ACCOUNT_MANAGEMENT,
    # people (updates refined by fields below)
    "user": USER_ACCESS,
    # paging
    "team": TEAMS_AND_ESCALATION,
    "escalation_policy": TEAMS_AND_ESCALATION,
    "schedule": TEAMS_AND_ESCALATION,
    "override": TEAMS_AND_ESCALATION,
    "rotation": TEAMS_AND_ESCALATION,
    # monitoring
    "service": SERVICE_CHANGES,
    "business_service": SERVICE_CHANGES,
    "maintenance_window": SERVICE_CHANGES,
    "service_dependency": SERVICE_CHANGES,
    "event_orchestration": SERVICE_CHANGES,
    "ruleset": SERVICE_CHANGES,
    # outside systems
    "integration": INTEGRATIONS,
    "extension": INTEGRATIONS,
    "webhook": INTEGRATIONS,
    "webhook_subscription": INTEGRATIONS,
    "app": INTEGRATIONS,
    "oauth_client": INTEGRATIONS,
    "vendor": INTEGRATIONS,
    # incidents
    "incident": INCIDENT_MANAGEMENT,
    "priority": INCIDENT_MANAGEMENT,
    "response_play": INCIDENT_MANAGEMENT,
    "incident_workflow": INCIDENT_MANAGEMENT,
    "status_page": INCIDENT_MANAGEMENT,
    "postmortem": INCIDENT_MANAGEMENT,
}

#: changed field or reference-list names that grant or revoke rights (user and team updates)
ACCESS_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "role",
        "base_role",
        "team_role",
        "members.role",
        "default_role",
        "permissions",
        "license",
        "email",
        "members",
        "teams",
    }
)

_PROMOTABLE: Final[frozenset[str]] = frozenset({"user", "team"})


def normalize_type(resource_type: str) -> str:
    """``team_reference`` → ``team``; other spellings are kept (lower-cased)."""
    kind = resource_type.strip().lower()
    return kind.removesuffix("_reference")


def categorize(resource_type: str, action: str, fields: Sequence[str]) -> str:
    """The category of a record about ``resource_type`` (root resource, with or without
    ``_reference``) with ``action``, whose details name ``fields`` (changed field names and
    changed reference-list names). Unknown types give ``other``; this never raises."""
    kind = normalize_type(resource_type)
    category = _BY_RESOURCE_TYPE.get(kind, OTHER)
    if kind not in _PROMOTABLE or action != "update":
        return category
    if any(name.strip().lower() in ACCESS_FIELDS for name in fields):
        return USER_ACCESS
    return USER_PROFILE if kind == "user" else category
