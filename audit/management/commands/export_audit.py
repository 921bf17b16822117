"""``manage.py export_audit``: the audit trail as CSV or JSON Lines, with a manifest beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.export import FORMATS, ExportError, ExportRun, export_events, parse_filters, record_export


class Command(BaseCommand):
    help = (
        "Export audit events matching the filters to FILE (CSV or JSON Lines), in id order, and write "
        "FILE.manifest.json (row count, SHA-256 of FILE, filters, the chain checkpoint it covers)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--output", required=True, help="The file to write ('-' is refused).")
        parser.add_argument("--since", help="From this time (inclusive), ISO 8601.")
        parser.add_argument("--until", help="Up to this time (exclusive), ISO 8601.")
        parser.add_argument("--human", help="The human's username.")
        parser.add_argument("--agent", help="The agent's client_id.")
        parser.add_argument("--server", help="The MCP server's name.")
        parser.add_argument("--tool")
        parser.add_argument("--outcome", help="allow, deny or error.")
        parser.add_argument("--event-type", dest="event_type")

    def handle(self, *args, **options) -> None:
        raw = {
            key: options[key]
            for key in ("since", "until", "human", "agent", "server", "tool", "outcome", "event_type")
            if options.get(key) is not None
        }
        output = Path(options["output"])
        try:
            run = ExportRun(parse_filters(raw), options["format"])
        except ExportError as error:
            raise CommandError(str(error)) from error
        if not output.parent.is_dir():
            raise CommandError(f"No such directory: {output.parent}")
        manifest_path = output.with_name(output.name + ".manifest.json")
        # Written beside the target and renamed when complete: no half-written export under FILE.
        partial = output.with_name(f".{output.name}.partial")
        try:
            with partial.open("wb") as out:
                manifest = export_events({}, options["format"], out, run=run)
            manifest["file"] = output.name
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        record_export(run, door="cli", rows=manifest["rows"], sha256=manifest["sha256"], file=str(output))
        self.stdout.write(f"Wrote {manifest['rows']} events to {output} (sha256 {manifest['sha256']}).")
