"""docs/triage.md and the rule registries in step: every plugin rule (plugin/rules) has a
section with its severities, every evidence key and exactly what it suppresses; every
agent rule (agent/triage/) has one too; no section describes a rule that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sockdebug_agent import triage
from sockdebug_plugin.rules import RULES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "triage.md"
TEXT = DOCS.read_text()
AGENT_PART, _, PLUGIN_PART = TEXT.partition("\n# Part 2")
HEADING = re.compile(r"^### `([a-z-]+)` — (.+)$", re.M)


def sections(part: str) -> dict[str, tuple[str, str]]:
    """id -> (severities text, section body)."""
    found = list(HEADING.finditer(part))
    out = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(part)
        body = part[m.end():end].split("\n## ", 1)[0]
        out[m.group(1)] = (m.group(2), body)
    return out


PLUGIN = sections(PLUGIN_PART)
AGENT = sections(AGENT_PART)


def field(body: str, name: str) -> str:
    m = re.search(rf"^- \*\*{name}:\*\* (.+?)(?=^- \*\*|\Z)", body, re.M | re.S)
    assert m, f"no **{name}:** line"
    return m.group(1)


def test_every_section_is_a_rule_and_every_rule_has_a_section():
    assert set(PLUGIN) == set(RULES)
    assert set(AGENT) == set(triage.FINDING_IDS)


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_each_plugin_rule_section(rule_id):
    rule = RULES[rule_id]
    severities, body = PLUGIN[rule_id]
    assert set(severities.split(" / ")) == set(rule.severities)
    evidence = field(body, "Evidence")
    for key in rule.evidence:
        assert f"`{key}`" in evidence, key
    suppresses = field(body, "Suppresses")
    listed = set(re.findall(r"`([a-z-]+)`", suppresses))
    assert listed == set(rule.suppresses), (listed, rule.suppresses)
    if not rule.suppresses:
        assert suppresses.strip().startswith("nothing")
    assert field(body, "When")


def test_agent_rule_sections_name_their_evidence():
    for rule_id, (_severities, body) in AGENT.items():
        assert field(body, "When") and field(body, "Evidence"), rule_id
