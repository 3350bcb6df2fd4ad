"""Chat completion bodies and stream events in the OpenAI API's shapes.

The reply is always ``echo: <last user message>``, so a test can check that
the prompt crossed the gateway intact in both directions.
"""

import json
import time
import uuid
from collections.abc import Iterator

# A stream sends this many content chunks, one every interval, so a test can
# tell chunks that arrive one by one from a response buffered to the end.
STREAM_CONTENT_CHUNKS = 6
STREAM_CHUNK_INTERVAL_SECONDS = 0.2


def last_user_text(messages: list) -> str:
    """Return the text of the last user message, joining text parts."""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            ]
            return "".join(texts)
    return ""


def reply_text(payload: dict) -> str:
    return f"echo: {last_user_text(payload['messages'])}"


def usage(payload: dict, reply: str) -> dict:
    # NOTE: these are whitespace word counts, not a real tokenizer's, so only
    # the shape of the usage object is meaningful.
    prompt_tokens = len(json.dumps(payload["messages"]).split())
    completion_tokens = len(reply.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(payload: dict) -> dict:
    """Build a non-streaming ``chat.completion`` object for the request."""
    reply = reply_text(payload)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload["model"],
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(payload, reply),
    }


def split_evenly(text: str, parts: int) -> list[str]:
    """Split text into ``parts`` consecutive pieces whose lengths differ by at most one."""
    size, remainder = divmod(len(text), parts)
    pieces = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < remainder else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def stream_events(payload: dict) -> Iterator[str]:
    """Yield the server-sent events of a streamed chat completion, ending with [DONE].

    Sends the role chunk at once, then each content chunk after a pause, then
    the finish chunk, and a usage chunk when stream_options.include_usage is set.
    """
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = payload["model"]
    reply = reply_text(payload)
    stream_options = payload.get("stream_options")
    include_usage = (
        isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    )

    def chunk(choices: list, usage_value=None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage_value
        return f"data: {json.dumps(body)}\n\n"

    def choice(delta: dict, finish_reason=None) -> list:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    yield chunk(choice({"role": "assistant", "content": ""}))
    # A reply is at least 6 characters ("echo: "), so no content piece is empty.
    for piece in split_evenly(reply, STREAM_CONTENT_CHUNKS):
        time.sleep(STREAM_CHUNK_INTERVAL_SECONDS)
        yield chunk(choice({"content": piece}))
    yield chunk(choice({}, finish_reason="stop"))
    if include_usage:
        yield chunk([], usage(payload, reply))
    yield "data: [DONE]\n\n"
