"""
Policy as code: a YAML or JSON document that declares MCP servers with their tools, agents, which
groups may delegate which scopes, and console settings.

``parse`` checks everything the document alone can tell; ``apply`` checks it against the console
(users, servers the file does not list) and then makes the console match it, in one transaction;
``export`` writes the console out in the same shape, so export -> apply changes nothing.

What ``apply`` does with what the file does not mention:

- a server listed in the file is made to match it exactly: tools and actions of that server that
  the file does not list are removed (and with them the delegable scopes that named them);
- servers not listed are left alone; servers are known by name, so a new name is a new server
  (with new credentials), and a resource URI moves from one server to another in two applies;
- an agent listed (by client_id) is made to match the file: name, client type, redirect URIs,
  status (through the audited status changes), team, owner, scope ceiling, token lifetimes. A new
  one is a ``manual`` registration; a confidential one gets a client secret shown once, as one that
  turns confidential does. Agents not listed are left alone, and none is ever removed;
- a group listed in the file gets exactly the file's members and may_delegate (for every
  server); groups not listed are left alone; users are never created or removed;
- an exchange policy (token exchange hop, ``exchange_policies``) listed gets exactly the file's
  scopes; hops not listed are left alone (removing one ends the tokens exchanged along it);
- settings not listed keep their value.
"""

from policies.policy_file.apply import apply, dump, export
from policies.policy_file.document import ApplyResult, PolicyDocument, PolicyError
from policies.policy_file.reader import parse, read_policy_file

__all__ = [
    "ApplyResult",
    "PolicyDocument",
    "PolicyError",
    "apply",
    "dump",
    "export",
    "parse",
    "read_policy_file",
]
