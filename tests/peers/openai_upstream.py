"""Loopback stand-in for the OpenAI REST API, for the gateway's end-to-end tests.

Serves ``POST /v1/chat/completions`` as JSON, or as server-sent events when
the request sets ``"stream": true``, and ``GET /v1/models``, to callers that send
``Authorization: Bearer <key>`` with the key from env ``UPSTREAM_KEY``. Every
request outside ``/_peer/`` is recorded (method, raw target, headers, body)
so a test can read back what the gateway forwarded from
``GET /_peer/requests`` and clear the log with ``DELETE /_peer/requests``.
Prints ``LISTENING <port>`` once bound and stops when stdin closes.
"""

import hmac
import os
import sys
import threading
import uuid

from flask import Flask, Response, jsonify, request

from chat_completion import completion_body, stream_events
from peer_server import serve_until_stdin_closes

PEER_PATH_PREFIX = "/_peer/"


class RequestLog:
    """Thread-safe list of the requests this peer received, oldest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict] = []

    def append(self, entry: dict) -> None:
        with self._lock:
            self._entries.append(entry)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def openai_error(status: int, message: str, error_type: str, code=None, param=None):
    """Build an error response in the shape the OpenAI API uses."""
    body = {
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    }
    return jsonify(body), status


def describe_request() -> dict:
    """Capture the current request as it arrived, for GET /_peer/requests."""
    return {
        "method": request.method,
        "path": request.path,
        # The request target exactly as sent, before percent-decoding.
        "raw_uri": request.environ.get("RAW_URI"),
        "query_string": request.query_string.decode("latin-1"),
        # WSGI joins repeated header lines into one value with commas.
        "headers": [[name, value] for name, value in request.headers.items()],
        "body": request.get_data(cache=True).decode("utf-8", errors="replace"),
    }


def check_bearer_key(upstream_key: str):
    """Return a 401 response unless the request carries the expected bearer key."""
    header = request.headers.get("Authorization")
    if header is None:
        return openai_error(
            401,
            "You didn't provide an API key. Send it in an Authorization header "
            "using Bearer auth (Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
        )

    scheme, _, token = header.partition(" ")
    # compare_digest keeps the comparison time independent of the key prefix.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.encode("utf-8"), upstream_key.encode("utf-8")
    ):
        return openai_error(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            code="invalid_api_key",
        )
    return None


def validate_chat_request(payload):
    """Return a 400 response for a body that is not a chat completion request."""
    if not isinstance(payload, dict):
        return openai_error(
            400,
            "We could not parse the JSON body of your request. "
            "Send a JSON object with 'model' and 'messages'.",
            "invalid_request_error",
        )
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        return openai_error(
            400, "You must provide a model parameter.", "invalid_request_error", param="model"
        )
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        return openai_error(
            400,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            code="missing_required_parameter",
            param="messages",
        )
    return None


def create_app(upstream_key: str) -> Flask:
    """Build the Flask app that accepts only ``upstream_key`` as bearer key."""
    app = Flask(__name__)
    request_log = RequestLog()

    @app.before_request
    def record_and_authenticate():
        if request.path.startswith(PEER_PATH_PREFIX):
            return None
        request_log.append(describe_request())
        return check_bearer_key(upstream_key)

    @app.get("/_peer/requests")
    def list_requests():
        return jsonify(request_log.snapshot())

    @app.delete("/_peer/requests")
    def clear_requests():
        request_log.clear()
        return "", 204

    @app.get("/v1/models")
    def list_models():
        # The endpoint a key check calls: cheap, read-only, authenticated.
        return jsonify(
            {
                "object": "list",
                "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "system"}],
            }
        )

    @app.post("/v1/chat/completions")
    def chat_completions():
        payload = request.get_json(silent=True)
        invalid = validate_chat_request(payload)
        if invalid is not None:
            return invalid

        request_id = f"req_{uuid.uuid4().hex}"
        if payload.get("stream") is True:
            events = stream_events(payload)
            response = Response(events, status=200, mimetype="text/event-stream")
            response.headers["Cache-Control"] = "no-cache"
        else:
            response = jsonify(completion_body(payload))
        response.headers["x-request-id"] = request_id
        return response

    @app.errorhandler(404)
    @app.errorhandler(405)
    def unknown_url(_error):
        message = f"Invalid URL ({request.method} {request.path})"
        return openai_error(404, message, "invalid_request_error")

    return app


def main() -> int:
    upstream_key = os.environ.get("UPSTREAM_KEY", "")
    if not upstream_key:
        print(
            "UPSTREAM_KEY is not set: set it to the API key that callers must "
            "send as 'Authorization: Bearer <key>'",
            file=sys.stderr,
        )
        return 2
    serve_until_stdin_closes(create_app(upstream_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
