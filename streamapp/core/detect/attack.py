"""The MITRE ATT&CK Enterprise techniques a rule may name by id alone.

Names are ATT&CK's own, a sub-technique written ``Technique: Sub-technique`` as ATT&CK
does (checked against attack.mitre.org; T1556.009 and T1567.004 exist since ATT&CK v15).
A rules file names one of these by id (``attack = "T1098.003"``), or any other technique
as a table (``attack = { id = "T1199", name = "Trusted Relationship" }``).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

__all__ = ["TECHNIQUES", "Attack", "technique"]

#: technique id → name, for the ids the built-in pack uses and their parents
TECHNIQUES: Final[dict[str, str]] = {
    "T1078": "Valid Accounts",
    "T1078.004": "Valid Accounts: Cloud Accounts",
    "T1098": "Account Manipulation",
    "T1098.001": "Account Manipulation: Additional Cloud Credentials",
    "T1098.003": "Account Manipulation: Additional Cloud Roles",
    "T1136": "Create Account",
    "T1136.003": "Create Account: Cloud Account",
    "T1485": "Data Destruction",
    "T1531": "Account Access Removal",
    "T1556": "Modify Authentication Process",
    "T1556.009": "Modify Authentication Process: Conditional Access Policies",
    "T1562": "Impair Defenses",
    "T1562.007": "Impair Defenses: Disable or Modify Cloud Firewall",
    "T1567": "Exfiltration Over Web Service",
    "T1567.004": "Exfiltration Over Web Service: Exfiltration Over Webhook",
}

#: ``T1234`` or ``T1234.001``
TECHNIQUE_ID: Final = re.compile(r"T\d{4}(?:\.\d{3})?")


class Attack(msgspec.Struct, kw_only=True, frozen=True):
    """An ATT&CK technique: ``T1098.003``, its name, and its page on attack.mitre.org."""

    id: str
    name: str
    url: str


def technique(technique_id: str, name: str | None = None) -> Attack:
    """The technique ``technique_id``, named from :data:`TECHNIQUES` unless ``name`` is given.

    Raises ``KeyError`` for an id outside the table without a name and ``ValueError`` for an
    id that is not ``T`` and four digits (and ``.`` and three); the rules loader turns both
    into one ConfigError line.
    """
    if not TECHNIQUE_ID.fullmatch(technique_id):
        raise ValueError(technique_id)
    label = name if name is not None else TECHNIQUES[technique_id]
    path = technique_id.replace(".", "/")
    return Attack(id=technique_id, name=label, url=f"https://attack.mitre.org/techniques/{path}/")
