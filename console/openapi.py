"""The management API's error answers in the OpenAPI schema.

drf-spectacular documents the answers a view declares, which are its successes; DRF itself answers
403 (no session, role or CSRF token), 404 (no such object), 400 (a bad filter or body) and 415 (a
body that is not JSON). This postprocessing hook documents those wherever they can occur, so that
clients (and the fuzz suite's schema checks) know every status code the API may answer.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"
METHODS = ("get", "post", "put", "patch", "delete")
LOOKUP_PATTERN = r"^[^/.]+$"

SCHEMAS: dict[str, Any] = {
    "ApiDetail": {
        "type": "object",
        "description": "Why the request was refused.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ApiValidationError": {
        "type": "object",
        "description": "The fields (or `detail`, or `non_field_errors`) that were refused, and why.",
        "additionalProperties": True,
    },
}


def _response(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _errors(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    parameters = operation.get("parameters", [])
    errors = {"403": _response("ApiDetail", "Not signed in, no permission for this, or no CSRF token.")}
    if any(p.get("in") == "path" or p.get("name") in ("page", "cursor") for p in parameters):
        errors["404"] = _response("ApiDetail", "No such object (or no such page or cursor).")
    if "requestBody" in operation or any(p.get("in") == "query" for p in parameters):
        errors["400"] = _response("ApiValidationError", "A parameter or field was refused.")
    if "requestBody" in operation:
        errors["415"] = _response("ApiDetail", "The body is not in a media type the operation takes.")
    return errors


def document_api_errors(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add DRF's error answers to every /api/ operation."""
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for method in METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if (
                    parameter.get("in") == "path"
                    and schema.get("type") == "string"
                    and "format" not in schema
                ):
                    # DRF's router matches a lookup value of [^/.]+ only; anything else is no route.
                    schema.setdefault("pattern", LOOKUP_PATTERN)
            responses = operation.setdefault("responses", {})
            for status, response in _errors(operation).items():
                responses.setdefault(status, response)
    result.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    return result
