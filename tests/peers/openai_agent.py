"""An agent that calls the gateway through the official openai Python SDK.

The SDK's base_url comes from env CASTELLAN_BASE_URL (for example
``http://127.0.0.1:PORT/openai/v1``) and its api_key from env
CASTELLAN_AGENT_TOKEN. The agent makes one chat completion and one streamed
chat completion, then prints one JSON object:
``{"normal": {"content": ...}, "stream": {"chunks": [...], "arrival_ms": [...]}}``.
``arrival_ms[i]`` is the time in milliseconds from the start of the streamed
request to the arrival of ``chunks[i]``. On failure the agent prints the SDK's
error message to stderr and exits 1.

With ``--expect-denied [STATUS]`` it instead makes one chat completion, checks
that the SDK raises the error class for STATUS (default 403) and prints
``{"denied": {"status": ..., "error_class": ..., "body": ...}}``.
"""

import argparse
import json
import os
import sys
import time

import openai

# The SDK's error class for each status (openai._client._make_status_error).
ERROR_CLASS_BY_STATUS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}

REQUEST_TIMEOUT_SECONDS = 30.0


class AgentFailure(Exception):
    """A failed check of the agent, reported on stderr with exit status 1."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-4o-mini", help="model name sent in each request")
    parser.add_argument(
        "--prompt", default="hello from the agent", help="user message sent in each request"
    )
    parser.add_argument(
        "--expect-denied",
        type=int,
        nargs="?",
        const=403,
        default=None,
        metavar="STATUS",
        help="expect the request to fail with this HTTP status (default 403)",
    )
    return parser.parse_args(argv)


def required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise AgentFailure(
            f"environment variable {name} is missing or empty: set it before running"
        )
    return value


def build_client() -> openai.OpenAI:
    # trust_env=False keeps proxy variables from routing loopback traffic elsewhere.
    http_client = openai.DefaultHttpxClient(trust_env=False, timeout=REQUEST_TIMEOUT_SECONDS)
    return openai.OpenAI(
        base_url=required_env("CASTELLAN_BASE_URL"),
        api_key=required_env("CASTELLAN_AGENT_TOKEN"),
        max_retries=0,
        http_client=http_client,
    )


def chat_once(client: openai.OpenAI, args: argparse.Namespace) -> dict:
    completion = client.chat.completions.create(
        model=args.model, messages=[{"role": "user", "content": args.prompt}]
    )
    choice = completion.choices[0]
    return {"content": choice.message.content, "finish_reason": choice.finish_reason}


def chat_streamed(client: openai.OpenAI, args: argparse.Namespace) -> dict:
    chunks: list[str] = []
    arrival_ms: list[float] = []
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=args.model, messages=[{"role": "user", "content": args.prompt}], stream=True
    )
    with stream:
        for chunk in stream:
            # Only chunks with text are recorded, because the role chunk and
            # the finish chunk carry none.
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                arrival_ms.append(round((time.monotonic() - started) * 1000.0, 1))
                chunks.append(text)
    return {"chunks": chunks, "arrival_ms": arrival_ms, "content": "".join(chunks)}


def expected_error_class(status: int) -> type[openai.APIStatusError]:
    if status >= 500:
        return openai.InternalServerError
    return ERROR_CLASS_BY_STATUS.get(status, openai.APIStatusError)


def expect_denied(client: openai.OpenAI, args: argparse.Namespace) -> dict:
    expected = expected_error_class(args.expect_denied)
    try:
        chat_once(client, args)
    except openai.APIStatusError as error:
        if type(error) is not expected or error.status_code != args.expect_denied:
            raise AgentFailure(
                f"expected {expected.__name__} with status {args.expect_denied}, "
                f"got {type(error).__name__} with status {error.status_code}: {error}"
            ) from error
        return {
            "status": error.status_code,
            "error_class": type(error).__name__,
            "body": error.body,
            "response_text": error.response.text,
        }
    raise AgentFailure(
        f"expected {expected.__name__} with status {args.expect_denied}, "
        "but the chat completion succeeded"
    )


def run(args: argparse.Namespace) -> dict:
    client = build_client()
    if args.expect_denied is not None:
        return {"denied": expect_denied(client, args)}
    return {"normal": chat_once(client, args), "stream": chat_streamed(client, args)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except AgentFailure as failure:
        print(f"openai_agent: {failure}", file=sys.stderr)
        return 1
    except openai.OpenAIError as error:
        # A connection error's message is generic, so its cause names the reason.
        cause = f" (caused by {error.__cause__!r})" if error.__cause__ else ""
        print(f"openai_agent: {type(error).__name__}: {error}{cause}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
