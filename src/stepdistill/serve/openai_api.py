"""OpenAI-compatible routes on the student's server: a client that called the teacher switches to the
student by changing ``base_url`` and ``model``.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused-or-your---api-key")
    model = client.models.list().data[0].id
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Tom has 3 ..."}])
    r.choices[0].message.content                       # the label
    r = client.chat.completions.create(model=model, messages=[...], extra_body={"explain": True})
    r.choices[0].message.reasoning_content             # the rationale (also: model=f"{model}+explain")

- ``POST /v1/chat/completions``: the **last user message** is the task input: plain text (the formatted
  input), or a JSON object of the task's fields (``{"body": ..., "question": ...}``). Earlier messages and
  system prompts are ignored: the student was trained on the task input alone.
- ``POST /v1/completions``: ``prompt`` is the task input (a string; a list of strings gives one choice each).
- ``GET /v1/models``: the one model this server has.
- The answer's ``content`` (``text``) is the label; when the output is not a valid label, the raw answer.
  With ``"explain": true`` in the body (``extra_body`` in the SDK) or the model id with ``+explain``, the
  rationale comes as ``reasoning_content`` (the field reasoning models use). ``stepdistill`` holds the
  canonical ``label`` (null when unparseable) and ``raw``. ``usage`` counts prompt and generated tokens.
- Greedy decoding always: ``temperature``, ``top_p``, ``max_tokens``, ``seed`` and ``stop`` are accepted and
  ignored; ``n`` other than 1 and ``tools`` are refused (400). ``stream: true`` is served as server-sent
  events (the whole label in one chunk), with ``stream_options.include_usage`` honoured.
- Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

import json
import time
import uuid
from typing import Any

EXPLAIN_SUFFIX = "+explain"


def _error(status: int, code: str, message: str):
    from stepdistill.serve.batching import ApiError

    return ApiError(status, code, message)


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        if any(p.get("type") != "text" for p in content):
            raise _error(400, "unsupported_content", "only text content parts are supported")
        return "".join(str(p.get("text", "")) for p in content)
    raise _error(400, "invalid_request", "a message's content must be a string or a list of text parts")


def task_input(text: str) -> str | dict:
    """A user message as a task input: a JSON object of the task's fields, else the text itself."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            return text
        if isinstance(value, dict):
            return value
    return text


def _common(body: Any, model_id: str) -> tuple[bool, bool, bool]:
    """(explain, stream, include_usage) of an OpenAI request body, checking what both routes share."""
    if not isinstance(body, dict):
        raise _error(400, "invalid_request", "the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise _error(400, "invalid_request", "'model' is required (GET /v1/models lists it)")
    if model not in (model_id, model_id + EXPLAIN_SUFFIX):
        raise _error(404, "model_not_found", f"model {model!r} is not served here; this server has {model_id!r}")
    explain = body.get("explain", False)
    if not isinstance(explain, bool):
        raise _error(400, "invalid_request", "'explain' must be true or false")
    if body.get("n", 1) != 1:
        raise _error(400, "unsupported_n", "only n=1 is supported (decoding is greedy: every choice would match)")
    if body.get("tools") or body.get("functions"):
        raise _error(400, "tools_unsupported", "a distilled student answers its task; it does not call tools")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _error(400, "invalid_request", "'stream' must be true or false")
    options = body.get("stream_options") or {}
    return explain or model.endswith(EXPLAIN_SUFFIX), stream, bool(isinstance(options, dict)
                                                                    and options.get("include_usage"))


def last_user_message(body: dict) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _error(400, "invalid_request", "'messages' must be a non-empty array")
    for m in reversed(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise _error(400, "invalid_request", "each message must be an object with 'role' and 'content'")
        if m["role"] == "user":
            return _text_of(m.get("content"))
    raise _error(400, "invalid_request", "no message with role 'user': the last user message is the task input")


def usage(student, inputs: list, results: list[dict], explain: bool) -> dict:
    """Token counts: the prompts the student read and the tokens it wrote (eos included); zeros for an
    engine without a tokenizer."""
    tok = getattr(student, "tokenizer", None)
    if tok is None or not hasattr(student, "_text_and_row"):
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    from stepdistill.student.views import prompt_ids

    max_in = int(student.meta.get("max_input_tokens", 256))
    views = ("rationale",) if student.method == "single_task" else ("label", "rationale") if explain else ("label",)
    prompt = completion = 0
    for item, result in zip(inputs, results):
        text = student._text_and_row(item)[0]
        for view in views:
            prompt += len(prompt_ids(tok, student.family, view, text, max_in, student.layout))
        written = [result.get("raw") or ""] + ([result.get("rationale") or ""] if "rationale" in views else [])
        completion += sum(len(tok(" " + w, add_special_tokens=False)["input_ids"]) + 1 for w in written)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _content(result: dict) -> str:
    label = result.get("label")
    return str(label) if label is not None else str(result.get("raw") or "")


def _extras(result: dict) -> dict:
    return {"stepdistill": {"label": result.get("label"), "raw": result.get("raw")}}


def add_openai_routes(app, student, model_id: str, read_json, answer, created: float) -> None:
    """Register /v1/models, /v1/chat/completions and /v1/completions on ``app``. ``read_json(request)``
    reads a body within the limits; ``answer(payload)`` validates and predicts like POST /predict."""
    from fastapi import Request

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": int(created),
                                            "owned_by": "stepdistill"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_json(request)
        explain, stream, include_usage = _common(body, model_id)
        item = task_input(last_user_message(body))
        inputs, results, explain = await answer({"input": item, "explain": explain})
        result, rid, now = results[0], f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        use = usage(student, inputs, results, explain)
        message = {"role": "assistant", "content": _content(result)}
        if explain:
            message["reasoning_content"] = result.get("rationale", "")
        if stream:
            return _chat_stream(rid, now, model_id, message, use if include_usage else None, _extras(result))
        return {"id": rid, "object": "chat.completion", "created": now, "model": model_id,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": use, **_extras(result)}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request)
        explain, stream, _ = _common(body, model_id)
        if stream:
            raise _error(400, "stream_unsupported", "stream=true is served on /v1/chat/completions only; send "
                         "stream=false here")
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise _error(400, "invalid_request", "'prompt' must be a string or a non-empty array of strings")
        inputs, results, explain = await answer({"inputs": [task_input(p) for p in prompts], "explain": explain})
        choices = []
        for i, r in enumerate(results):
            choice = {"index": i, "text": _content(r), "finish_reason": "stop", "logprobs": None, **_extras(r)}
            if explain:
                choice["reasoning_content"] = r.get("rationale", "")
            choices.append(choice)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_id, "choices": choices, "usage": usage(student, inputs, results, explain)}


def _chat_stream(rid: str, created: int, model_id: str, message: dict, use: dict | None, extras: dict):
    """The answer as server-sent events: role, content (and reasoning), finish, optional usage, [DONE]."""
    from fastapi.responses import StreamingResponse

    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_id}

    def chunk(delta: dict, finish: str | None = None, **more) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return f"data: {json.dumps({**head, 'choices': choices, **more})}\n\n"

    def events():
        yield chunk({"role": "assistant", "content": ""})
        if "reasoning_content" in message:
            yield chunk({"reasoning_content": message["reasoning_content"]})
        yield chunk({"content": message["content"]})
        yield chunk({}, "stop", **extras)
        if use is not None:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': use})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
