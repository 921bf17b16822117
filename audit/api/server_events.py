"""POST /api/audit/server-events/: MCP servers report what happened after their tool calls.

Authenticated with the MCP server's own credentials, exactly as introspection is. The body is
``{"events": [...]}``, at most ``MAX_BATCH_EVENTS`` events and ``DATA_UPLOAD_MAX_MEMORY_SIZE``
bytes. The answer is ``{"recorded": [event ids], "duplicates": [event ids]}``; a refused batch
records nothing and answers ``{"error", "error_description", "events": [{"index", "event_id",
"errors"}]}``, the same error shape as the console's OAuth endpoints, for every failure.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import RequestDataTooBig
from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from audit.ingest import MAX_BATCH_EVENTS, MAX_DETAIL_BYTES, EventsRefused, ReportedEvent, ingest_events
from policies.models import McpServer, validate_tool_name
from policies.oauth.server_auth import authenticate_server
from policies.tokens import token_checksum as checksum_of

HEX_SHA256 = RegexValidator(r"^[0-9a-f]{64}\Z", "A lowercase hex SHA-256 (64 characters).")


class McpServerAuthentication(BaseAuthentication):
    """The MCP server's client id and secret, by HTTP Basic, as at the introspection endpoint."""

    def authenticate(self, request) -> tuple[AnonymousUser, McpServer]:
        server = authenticate_server(request._request)
        if server is None:
            raise exceptions.AuthenticationFailed("MCP server authentication failed.")
        return AnonymousUser(), server

    def authenticate_header(self, request) -> str:
        return 'Basic realm="audit events"'


class McpServerAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = McpServerAuthentication
    name = "mcpServerBasic"

    def get_security_definition(self, auto_schema) -> dict:
        return {"type": "http", "scheme": "basic", "description": "The MCP server's client id and secret."}


class IsMcpServer(BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, McpServer)


class JsonBody(JSONParser):
    """DRF's JSON parser; JSON nested deeper than Python's recursion limit is a parse error too."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from exc


class JsonString(serializers.CharField):
    """A JSON string: DRF's CharField would also take a number and turn it into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JsonInteger(serializers.IntegerField):
    """A JSON integer: not a string of digits, a float or a boolean."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class ServerEventSerializer(serializers.Serializer):
    """One tool-call result. Give ``token`` (hashed at once, never kept) or its ``token_checksum``."""

    event_id = JsonString(
        max_length=128,
        validators=[RegexValidator(r"^[A-Za-z0-9._:-]+\Z", "Use letters, digits and . _ : - only.")],
    )
    token = JsonString(required=False, max_length=4096, trim_whitespace=False, write_only=True)
    token_checksum = JsonString(required=False, validators=[HEX_SHA256])
    tool = JsonString(max_length=100, validators=[validate_tool_name])
    action = JsonString(max_length=50, validators=[validate_tool_name])
    outcome = serializers.ChoiceField(["success", "error"])
    reason = JsonString(
        required=False,
        allow_blank=True,
        default="",
        max_length=64,
        validators=[RegexValidator(r"^[a-z0-9_.-]*\Z", "A short code: a-z, 0-9 and _ . - only.")],
    )
    duration_ms = JsonInteger(min_value=0, max_value=24 * 3600 * 1000)
    arguments_digest = JsonString(validators=[HEX_SHA256])
    occurred = serializers.DateTimeField()
    detail = serializers.DictField(required=False, default=dict)

    def to_internal_value(self, data: Any) -> dict:
        # Unknown fields are refused, not dropped: a server sending "arguments" learns they are not kept.
        if isinstance(data, dict) and (unknown := sorted(set(data) - set(self.fields))):
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    def validate_detail(self, value: dict) -> dict:
        if len(json.dumps(value).encode()) > MAX_DETAIL_BYTES:
            raise serializers.ValidationError(f"At most {MAX_DETAIL_BYTES} bytes of JSON.")
        return value

    def validate(self, data: dict) -> ReportedEvent:
        if ("token" in data) == ("token_checksum" in data):
            raise serializers.ValidationError({"token": ["Give either token or token_checksum."]})
        raw_token = data.pop("token", None)
        checksum = data.pop("token_checksum", None) or checksum_of(raw_token)
        return ReportedEvent(token_checksum=checksum, **data)


class EventBatchSerializer(serializers.Serializer):
    events = ServerEventSerializer(many=True, allow_empty=False)


def error_response(error: str, description: str, status_code: int, **extra: Any) -> Response:
    return Response(
        {"error": error, "error_description": description, **extra},
        status=status_code,
        headers={"Cache-Control": "no-store"},
    )


ERROR_CODES = {
    status.HTTP_401_UNAUTHORIZED: "invalid_client",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "batch_too_large",
}


class BodyTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large: send fewer events per request."


def _api_error(exc: Exception, context: dict) -> Response | None:
    """DRF's answer to its own exceptions (auth, parse, media type, method), in our error shape."""
    response = exception_handler(exc, context)
    if response is not None:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else exc
        response.data = {
            "error": ERROR_CODES.get(response.status_code, "invalid_request"),
            "error_description": str(detail),
        }
        response["Cache-Control"] = "no-store"
    return response


def _refused_events(raw_events: list, errors: dict[int, Any]) -> list[dict[str, Any]]:
    def event_id(index: int) -> Any:
        raw = raw_events[index]
        return raw.get("event_id") if isinstance(raw, dict) else None

    return [
        {"index": index, "event_id": event_id(index), "errors": errors[index]} for index in sorted(errors)
    ]


def _per_event_errors(errors: Any) -> dict[int, Any]:
    """DRF's errors of a list of events, by index ({} when the list itself was wrong)."""
    if isinstance(errors, list) and all(isinstance(error, dict) for error in errors):
        errors = dict(enumerate(errors))  # older DRF answered a list, one entry per item
    if not isinstance(errors, dict) or not all(isinstance(index, int) for index in errors):
        return {}
    return {index: error for index, error in errors.items() if error}


def _first_message(errors: Any) -> str:
    while isinstance(errors, (dict, list)) and errors:
        errors = next(iter(errors.values())) if isinstance(errors, dict) else errors[0]
    return str(errors)


class ServerEvents(APIView):
    """An MCP server reports tool-call results, in batches, idempotent by its own event ids."""

    authentication_classes = [McpServerAuthentication]
    permission_classes = [IsMcpServer]
    parser_classes = [JsonBody]
    renderer_classes = [JSONRenderer]
    # What console.limits answers when a body's Content-Length is over the limit.
    body_too_large_error = "batch_too_large"

    def get_exception_handler(self):
        return _api_error

    def initial(self, request, *args, **kwargs) -> None:
        try:
            # Read through Django, which bounds the body (DRF's parser would read it unbounded).
            request._request.body  # noqa: B018
        except RequestDataTooBig as exc:
            raise BodyTooLarge() from exc
        super().initial(request, *args, **kwargs)

    @extend_schema(
        request=EventBatchSerializer,
        responses={
            200: OpenApiResponse(description='{"recorded": [event ids], "duplicates": [event ids]}'),
            400: OpenApiResponse(description="Refused whole: nothing recorded; the reason per event."),
            401: OpenApiResponse(description="MCP server authentication failed."),
            413: OpenApiResponse(description=f"More than {MAX_BATCH_EVENTS} events, or too large a body."),
        },
    )
    def post(self, request) -> Response:
        raw_events = request.data.get("events") if isinstance(request.data, dict) else None
        if isinstance(raw_events, list) and len(raw_events) > MAX_BATCH_EVENTS:
            return error_response("batch_too_large", f"At most {MAX_BATCH_EVENTS} events per request.", 413)
        batch = EventBatchSerializer(data=request.data)
        if not batch.is_valid():
            per_event = _per_event_errors(batch.errors.get("events"))
            if per_event and isinstance(raw_events, list):
                return self._refused(raw_events, per_event)
            return error_response("invalid_request", _first_message(batch.errors), 400, errors=batch.errors)
        try:
            result = ingest_events(request.auth, batch.validated_data["events"], request=request._request)
        except EventsRefused as refused:
            return self._refused(raw_events, refused.errors)
        return Response({"recorded": result.recorded, "duplicates": result.duplicates})

    @staticmethod
    def _refused(raw_events: list, errors: dict[int, Any]) -> Response:
        return error_response(
            "invalid_events",
            f"{len(errors)} of {len(raw_events)} events refused; nothing was recorded.",
            400,
            events=_refused_events(raw_events, errors),
        )
