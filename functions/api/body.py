"""Reading a request body: size-capped before it is parsed, then strict JSON."""

from __future__ import annotations

import json
from typing import Any

from engine.jsontext import json_problem
from functions.api.errors import ApiError, BodyTooLargeError, InvalidJsonError

#: Bodies over 5.5 MiB are refused before parsing: a run may start with a 5 MB text
#: (5 MB of text is a little more as a JSON string: its escapes), whose large values go
#: to the state bucket. API Gateway allows 10 MB, but Lambda takes a request event of at
#: most 6 MB (the body, escaped again inside the event, and its headers); a graph is
#: capped at 256 KiB, a run's state as stored at 256 KiB.
MAX_BODY_BYTES = 5632 * 1024
#: Arrays and objects nest at most this deep. Deeper bodies are refused before anything
#: (the JSON parser, pydantic, a copy) recurses through them and exhausts the stack.
MAX_BODY_DEPTH = 64


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(text: str) -> Any:
    """The resolver's JSON body deserializer: refuse oversized bodies, then parse.

    Refuses bodies nested deeper than :data:`MAX_BODY_DEPTH` and text UTF-8 cannot encode
    (escaped lone surrogates, ``"\\ud800"``: a 400 naming its path, such as
    ``body.state.a``); a top-level array comes back as a tuple (see below).
    """
    if len(text) > MAX_BODY_BYTES or len(text.encode("utf-8", "replace")) > MAX_BODY_BYTES:
        raise BodyTooLargeError(
            f"request body is over {MAX_BODY_BYTES} bytes",
            details={"limit": MAX_BODY_BYTES},
        )
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # JSONDecodeError, or NaN/Infinity that JSON does not have
        position = (
            f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        )
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidJsonError(f"request body is not valid JSON: {message}{position}") from None
    problem = json_problem(data, "body", MAX_BODY_DEPTH)
    if problem is not None and problem.too_deep:
        raise _too_deep()
    if problem is not None:
        raise ApiError(
            f"invalid request: {problem}", details=[{"path": problem.path, "message": problem.message}]
        )
    # Powertools gives a body parameter that is not a list the first item of a list body,
    # so ``[graph, junk]`` would be taken for ``graph``. A tuple is passed on whole, and
    # refused as the array it is.
    return tuple(data) if isinstance(data, list) else data


def _too_deep() -> InvalidJsonError:
    return InvalidJsonError(
        f"request body nests arrays and objects deeper than {MAX_BODY_DEPTH} levels",
        details={"limit": MAX_BODY_DEPTH},
    )
