"""
Import an MCP server's tools from the live server (``tools/list`` through the official ``mcp`` SDK
client over streamable HTTP) and report what changed since the last import.

Import never deletes a tool: delegations and policies reference them. A tool the server no longer
lists is marked unavailable; one that comes back is available again. An existing tool keeps the
actions and risk an admin gave it; only its description and input schema follow the server, and
the report names every such change (a changed description is what the human reads on the consent
page, so an admin should look at it).

A new tool's action and risk come from the server's annotations, which are hints an untrusted
server gives, so they only set a starting point, leaning to the safe side (MCP's own defaults: a
tool is not read-only and is destructive unless it says otherwise):

    readOnlyHint true                       -> action "read",  risk low (medium if openWorldHint true)
    readOnlyHint absent/false, destructiveHint false -> action "write", risk medium
    readOnlyHint absent/false, destructiveHint absent/true -> action "write", risk high
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx2
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import PaginatedRequestParams
from mcp_types import Tool as ListedTool

from audit.events import record
from policies.discovery import ConsoleAgentUnavailable, discovery_token
from policies.models import McpServer, Tool, ToolAction, validate_tool_name

LIST_TIMEOUT_SECONDS = 20
# A server that keeps returning cursors must not keep the admin's request forever.
MAX_PAGES = 100
NAME_LENGTH = Tool._meta.get_field("name").max_length
# What an import needs at every door: it changes the server and adds and changes its tools.
IMPORT_PERMISSIONS = ["policies.change_mcpserver", "policies.add_tool", "policies.change_tool"]


class ToolImportError(Exception):
    """The tools could not be listed; the message says why, for the admin (never the token)."""


@dataclass
class ImportResult:
    """Tool names by what the import did to them; ``skipped`` maps a name to why it was not imported."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def action_and_risk(listed: ListedTool) -> tuple[str, str]:
    """The action and risk a newly listed tool starts with (see the module docstring)."""
    hints = listed.annotations
    if hints is not None and hints.read_only_hint:
        return "read", Tool.Risk.MEDIUM if hints.open_world_hint else Tool.Risk.LOW
    if hints is not None and hints.destructive_hint is False:
        return "write", Tool.Risk.MEDIUM
    return "write", Tool.Risk.HIGH


def list_server_tools(resource: str, token: str | None = None) -> list[ListedTool]:
    """Every tool the MCP server at ``resource`` lists, following pagination cursors."""
    # The SDK turns an HTTP error into a generic MCP error; the statuses seen tell a refusal apart.
    statuses: list[int] = []
    try:
        return asyncio.run(_list_tools(resource, token, statuses))
    except ToolImportError:
        raise
    # The SDK raises ExceptionGroups from its task group; KeyboardInterrupt and the like propagate.
    except (Exception, BaseExceptionGroup) as error:
        raise ToolImportError(_explain(error, resource, statuses)) from None


async def _list_tools(resource: str, token: str | None, statuses: list[int]) -> list[ListedTool]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def note_status(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async with httpx2.AsyncClient(
        headers=headers, timeout=LIST_TIMEOUT_SECONDS, event_hooks={"response": [note_status]}
    ) as http:
        async with streamable_http_client(resource, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=LIST_TIMEOUT_SECONDS) as session:
                await session.initialize()
                tools: list[ListedTool] = []
                cursor = None
                for _ in range(MAX_PAGES):
                    page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        return tools
                raise ToolImportError(f"The server kept paginating past {MAX_PAGES} pages of tools.")


def _explain(error: BaseException, resource: str, statuses: list[int]) -> str:
    root = _first_leaf(error)
    refusals = [status for status in statuses if status in (401, 403)]
    if refusals:
        return (
            f"The server at {resource} refused to list its tools (HTTP {refusals[0]}): "
            "it needs a bearer token it accepts. The console's own token works only for a server "
            "protected by this console; for another authorization server, paste one of its tokens."
        )
    errors = [status for status in statuses if status >= 400]
    if errors:
        return f"The server at {resource} answered HTTP {errors[0]}."
    if isinstance(root, httpx2.TransportError):
        return f"Could not reach the server at {resource} ({type(root).__name__})."
    if isinstance(root, MCPError):
        return f"The server at {resource} answered with an MCP error: {root.error.message}"
    if isinstance(root, ToolImportError):
        return str(root)
    return f"Could not list the tools of {resource} ({type(root).__name__})."


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def import_tools(server: McpServer, *, by: AbstractBaseUser | None, token: str | None = None) -> ImportResult:
    """List the live server's tools and bring its Tool rows in line; returns what changed.

    ``token`` is a bearer token for servers protected by another authorization server; it is used
    for this one listing and neither stored nor logged. Without it, the listing carries the
    console's own discovery token for ``by`` (``policies.discovery``), which a server protected by
    this console accepts, and which is deleted once the listing is done.
    """
    listed = _list_for_import(server, by, token)  # network first, outside any transaction
    result = ImportResult()
    now = timezone.now()
    with transaction.atomic():
        existing = {tool.name: tool for tool in Tool.objects.select_for_update().filter(server=server)}
        seen: set[str] = set()
        for item in listed:
            problem = _name_problem(item.name)
            if problem:
                result.skipped[item.name] = problem
                continue
            seen.add(item.name)
            tool = existing.get(item.name)
            if tool is None:
                _create_tool(server, item, now)
                result.added.append(item.name)
                continue
            description, schema = item.description or "", item.input_schema
            came_back = not tool.available
            if description != tool.description or schema != tool.input_schema:
                result.changed.append(item.name)
            elif came_back:
                result.added.append(item.name)
            else:
                result.unchanged.append(item.name)
            tool.description, tool.input_schema, tool.available, tool.last_seen = (
                description,
                schema,
                True,
                now,
            )
            tool.save(update_fields=["description", "input_schema", "available", "last_seen"])
        gone = [tool for name, tool in existing.items() if name not in seen and tool.available]
        Tool.objects.filter(pk__in=[tool.pk for tool in gone]).update(available=False)
        result.removed = sorted(tool.name for tool in gone)
        server.tools_imported = now
        server.save(update_fields=["tools_imported"])
        record(
            "tools.imported",
            outcome="allow",
            actor=by,
            server=server,
            detail={
                "added": result.added,
                "removed": result.removed,
                "changed": result.changed,
                "skipped": sorted(result.skipped),
            },
        )
    return result


def _list_for_import(server: McpServer, by: AbstractBaseUser | None, token: str | None) -> list[ListedTool]:
    if token is not None or by is None:
        return list_server_tools(server.resource, token)
    try:
        with discovery_token(server, by) as own_token:
            return list_server_tools(server.resource, own_token)
    except ConsoleAgentUnavailable as error:
        raise ToolImportError(str(error)) from None


def _name_problem(name: str) -> str:
    if len(name) > NAME_LENGTH:
        return f"the name is longer than {NAME_LENGTH} characters"
    try:
        validate_tool_name(name)
    except ValidationError:
        return "the name cannot be part of a scope (letters, digits, _ . - only)"
    return ""


def _create_tool(server: McpServer, item: ListedTool, now) -> Tool:
    action, risk = action_and_risk(item)
    tool = Tool.objects.create(
        server=server,
        name=item.name,
        description=item.description or "",
        risk=risk,
        input_schema=item.input_schema,
        last_seen=now,
        available=True,
    )
    ToolAction.objects.create(tool=tool, name=action)
    return tool
