"""Helpers for tests that talk to the console over real HTTP, as a browser or an agent would."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class PageForm:
    """A page's form as a browser submits it: hidden inputs and ticked, enabled checkboxes.

    ``disabled`` holds the checkboxes shown but not submittable (a scope the policy forbids).
    """

    action: str = ""
    fields: dict[str, list[str]] = field(default_factory=dict)
    disabled: dict[str, list[str]] = field(default_factory=dict)

    def value(self, name: str) -> str:
        return self.fields[name][0]


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form = PageForm()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            self.form.action = attributes.get("action") or ""
            return
        name = attributes.get("name")
        if tag != "input" or not name:
            return
        kind, value = attributes.get("type", "text"), attributes.get("value") or ""
        if "disabled" in attributes:
            if kind == "checkbox":
                self.form.disabled.setdefault(name, []).append(value)
        elif kind == "hidden" or (kind == "checkbox" and "checked" in attributes):
            self.form.fields.setdefault(name, []).append(value)


def page_form(html: str) -> PageForm:
    """The (one) form of an HTML page."""
    parser = _FormParser()
    parser.feed(html)
    return parser.form


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
