"""The bridge between the model and the tools: ToolContext, ToolSpec, ToolRegistry.

A tool is ``async def verb_noun(ctx: ToolContext, arg: T, ...) -> ToolResult`` with a docstring
whose first paragraph describes it to the model and whose ``Args:`` section describes each
argument. :meth:`ToolSpec.of` derives the OpenAI-style function schema from the signature
(:func:`json_schema`); :meth:`ToolRegistry.invoke` validates arguments against it, converts
failures into :class:`ToolError` sentences written for the caller, and never raises anything
else into a call. This module knows no tool: tools.catalog lists them.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args, get_origin

from tools.domain.business import Business
from tools.errors import ToolError
from tools.store.business import load_business
from tools.store.db import Database
from tools.store.verifications import verified_phone


@dataclass
class ToolResult:
    """Structured data plus a short sentence the agent can say as is."""

    say: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {"ok": True, "say": self.say, **self.data}


class CallControl(typing.Protocol):
    """What a tool may ask of the call it runs in (implemented by the telephony side)."""

    async def request_transfer(self, reason: str) -> tuple[str, dict[str, Any]]:
        """Start a transfer (or say why not): (sentence for the caller, data for the model).
        Data with ``"no_reply": True`` means the call speaks for itself; the model stays quiet."""
        ...

    async def request_hangup(self, reason: str) -> None:
        """End the call once the reply to this tool (the goodbye) has been spoken."""
        ...


class TextSender(typing.Protocol):
    """Sends SMS (implemented by the telephony side when a sending number is configured)."""

    async def send_text(self, to: str, body: str) -> None:
        """Text ``body`` to ``to`` (E.164); raises an exception when it could not be sent."""
        ...


@dataclass
class ToolContext:
    """Everything a tool needs besides its arguments.

    Who the caller is: :meth:`proven_phone` is the one number they are proven to own. Records
    on it are theirs to hear and change; every other record is neither heard nor changed.
    """

    db: Database
    caller_phone: str = ""  # caller ID, E.164 from Twilio; "" for anonymous and browser callers
    caller_id_verified: bool = False  # Twilio verified the caller ID (STIR/SHAKEN A or B)
    call_sid: str = ""
    now: Callable[[], datetime] | None = None  # tests fix the clock; None means real time
    call: CallControl | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # per-call memory (e.g. customer id)
    # The business loaded when the call started: a call keeps the profile, hours, services and
    # escalation it started with while an admin edits them. None: read the current one each time.
    business: Business | None = None
    verified_phone: str = ""  # a number the caller proved during the call (an SMS code)
    texts: TextSender | None = None  # SMS, None when no sending number is configured
    # Nobody on this call can prove a number (the browser demo): proven_phone is always "".
    anonymous: bool = False
    placed_call: bool = False  # we called them (an outbound call), they did not call us

    async def proven_phone(self) -> str:
        """The number the caller is proven to own, "" for none: one they proved during this
        call (by a code, possibly on another worker), else the caller ID when Twilio verified
        it or the business trusts unverified caller ID; never any for an ``anonymous`` call."""
        if self.anonymous:
            return ""
        if not self.verified_phone and self.call_sid:
            async with self.db.read() as conn:
                self.verified_phone = await verified_phone(conn, self.call_sid)
        if self.verified_phone:
            return self.verified_phone
        if self.caller_phone and self.caller_id_verified:
            return self.caller_phone
        if self.caller_phone and (await self.current_business()).trust_unverified_caller_id:
            return self.caller_phone
        return ""

    def current_time(self) -> datetime:
        return self.now() if self.now else datetime.now(UTC)

    async def current_business(self) -> Business:
        """The business as the call saw it at its start, else the one stored now."""
        if self.business is not None:
            return self.business
        return await load_business(self.db)


ToolFunction = Callable[..., Awaitable[ToolResult]]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it (name, description, JSON schema) and how it is run."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: ToolFunction
    filler: bool = True  # say "one moment" when this tool starts
    timeout_secs: float = 8.0

    @classmethod
    def of(
        cls, function: ToolFunction, *, filler: bool = True, timeout_secs: float = 8.0
    ) -> ToolSpec:
        """The spec of an async tool function, named after it, schema from its signature."""
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"tool {function.__name__} must be async")
        description, parameters = json_schema(function)
        return cls(function.__name__, description, parameters, function, filler, timeout_secs)


def _json_type(annotation: object) -> dict[str, Any]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return _json_type(options[0])
        return {"anyOf": [_json_type(a) for a in options]}
    if origin is Literal:
        values = list(get_args(annotation))
        return {"type": "string", "enum": values}
    if origin in (list, tuple):
        (item,) = get_args(annotation)[:1] or (str,)
        return {"type": "array", "items": _json_type(item)}
    if annotation is str:
        return {"type": "string"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation is bool:
        return {"type": "boolean"}
    raise TypeError(f"tool argument type {annotation!r} has no JSON schema mapping")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"\n\s*Args:\s*\n", doc, maxsplit=1)
    description = " ".join(parts[0].split())
    args: dict[str, str] = {}
    if len(parts) == 2:
        current = ""
        for line in parts[1].splitlines():
            match = re.match(r"\s*(\w+):\s*(.*)", line)
            if match and not line.startswith(" " * 8):
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return description, args


def json_schema(function: ToolFunction) -> tuple[str, dict[str, Any]]:
    """(description, parameters schema) derived from a tool's signature and docstring."""
    description, arg_docs = _parse_docstring(function.__doc__ or "")
    hints = typing.get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "ctx":
            continue
        prop = _json_type(hints[name])
        if name in arg_docs:
            prop["description"] = arg_docs[name]
        properties[name] = prop
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
    return description, {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


class ArgumentError(ToolError):
    """The model's arguments do not fit the tool's schema (said as a question to the caller)."""


_SPOKEN_ARGUMENT = {
    "when": "day and time",
    "new_when": "new day and time",
    "current_when": "appointment you mean",
    "customer_name": "name",
}


def validate_arguments(spec: ToolSpec, arguments: object) -> dict[str, Any]:
    """Check model-supplied arguments against the tool's schema; coerce harmless mismatches."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ArgumentError("Sorry, I didn't catch the details. Could you say that again?")
    properties = spec.parameters["properties"]
    clean: dict[str, Any] = {}
    for key, value in arguments.items():
        if key not in properties:
            continue  # weak models add extra keys; ignore rather than fail the caller
        expected = properties[key]
        clean[key] = _coerce(key, value, expected)
    missing = [
        name
        for name in spec.parameters["required"]
        if name not in clean or clean[name] in ("", None)
    ]
    if missing:
        what = " and ".join(_SPOKEN_ARGUMENT.get(m, m.replace("_", " ")) for m in missing)
        raise ArgumentError(f"Could you tell me the {what}?", code="missing_argument")
    return clean


def _not_understood(name: str) -> ArgumentError:
    return ArgumentError(f"Sorry, I didn't get the {name.replace('_', ' ')}.")


def _as_string(name: str, value: object, expected: dict[str, Any]) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _not_understood(name)
    value = value.strip()
    if "enum" in expected and value not in expected["enum"]:
        raise _not_understood(name)
    return value[:500]


def _as_integer(name: str, value: object, expected: dict[str, Any]) -> int:
    if not isinstance(value, (str, int, float)):
        raise _not_understood(name)
    try:
        return int(value)
    except ValueError:
        raise _not_understood(name) from None


def _as_number(name: str, value: object, expected: dict[str, Any]) -> float:
    if not isinstance(value, (str, int, float)):
        raise _not_understood(name)
    try:
        return float(value)
    except ValueError:
        raise _not_understood(name) from None


def _as_boolean(name: str, value: object, expected: dict[str, Any]) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1"}
    return bool(value)


#: JSON-schema type -> how a model's argument is made that type (or refused, for the caller).
_COERCIONS: dict[str, Callable[[str, object, dict[str, Any]], object]] = {
    "string": _as_string,
    "integer": _as_integer,
    "number": _as_number,
    "boolean": _as_boolean,
}


def _coerce(name: str, value: object, expected: dict[str, Any]) -> object:
    kind = expected.get("type")
    coerce = _COERCIONS.get(kind) if isinstance(kind, str) else None
    if "anyOf" in expected or coerce is None:
        return value
    return coerce(name, value, expected)


@dataclass
class Invocation:
    """The outcome of one tool call, as recorded and as returned to the model."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    payload: dict[str, Any]
    error: str
    duration_ms: float


class ToolRegistry:
    """The enabled tools for one call, and the bridge that runs them safely."""

    def __init__(self, specs: Iterable[ToolSpec]) -> None:
        self.specs: dict[str, ToolSpec] = {spec.name: spec for spec in specs}

    def openai_tools(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {
                    "name": s.name,
                    "description": s.description,
                    "parameters": s.parameters,
                },
            }
            for s in self.specs.values()
        ]

    async def invoke(self, ctx: ToolContext, name: str, arguments: object) -> Invocation:
        """Run tool ``name``; every failure becomes an unsuccessful :class:`Invocation`."""
        started = time.perf_counter()
        spec = self.specs.get(name)
        args_record = arguments if isinstance(arguments, dict) else {"_raw": repr(arguments)}
        try:
            if spec is None:
                raise ToolError("Sorry, I can't do that over the phone.", code="unknown_tool")
            clean = validate_arguments(spec, arguments)
            args_record = clean
            result = await asyncio.wait_for(spec.function(ctx, **clean), spec.timeout_secs)
            return Invocation(name, args_record, True, result.to_payload(), "", _ms_since(started))
        except ToolError as exc:
            payload = {"ok": False, "say": exc.say, "error": exc.code, **exc.data}
            return Invocation(name, args_record, False, payload, exc.code, _ms_since(started))
        except TimeoutError:
            say = "Sorry, that's taking too long on my side. Let me try something else."
            payload = {"ok": False, "say": say, "error": "timeout"}
            return Invocation(name, args_record, False, payload, "timeout", _ms_since(started))
        except Exception as exc:  # a bug in a tool must not end the call
            say = "Sorry, something went wrong on my side with that."
            payload = {"ok": False, "say": say, "error": "internal"}
            error = f"internal: {type(exc).__name__}: {exc}"
            return Invocation(name, args_record, False, payload, error, _ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
