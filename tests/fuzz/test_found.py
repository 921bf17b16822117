"""What the fuzzers found, kept fixed."""

import json

import pytest

from console.roles import Role
from policies.models import McpServer
from policies.policy_file import PolicyError, apply
from policies.policy_file.reader import parse
from tests.api_support import api_as, person


def test_an_audit_filter_with_a_utc_offset_postgresql_cannot_store_is_compared_in_utc(db):
    api = api_as(person("audrey", Role.COMPLIANCE_AUDITOR))

    late = api.get("/api/audit/events/", {"until": "1071-05-19T11:30:22.400-17:02"})
    overflowing = api.get("/api/audit/events/", {"until": "0001-01-01T00:30:00+17:02"})

    assert late.status_code == 200
    assert overflowing.status_code == 400
    assert "until" in overflowing.json()["filters"][0]


def test_a_policy_file_with_a_nul_or_a_lone_surrogate_is_refused_by_line_and_changes_nothing(db):
    text = (
        'servers:\n  - name: x\n    resource: "https://x.example.com/mcp"\n    description: "\\ud800 \\0"\n'
    )

    with pytest.raises(PolicyError) as refusal:
        apply(parse(text))

    assert refusal.value.problems == ["line 4: a NUL character or a lone surrogate cannot be stored"]
    assert not McpServer.objects.exists()


def test_a_json_policy_file_keeps_a_character_json_escapes_as_a_surrogate_pair(db):
    text = json.dumps(
        {
            "servers": [
                {"name": "x", "resource": "https://x.example.com/mcp", "description": "📅", "tools": []}
            ]
        }
    )

    apply(parse(text, source="policy.json"))

    assert McpServer.objects.get(name="x").description == "📅"
