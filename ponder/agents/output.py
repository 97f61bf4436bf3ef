"""Typed answers: an agent's final answer as a validated object, not text.

``Agent(..., output=Movie)`` takes a pydantic model, a TypedDict or a JSON Schema (a dict);
per run, ``config["configurable"]["response_format"]`` takes OpenAI's ``response_format``
(``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` or
``{"type": "json_object"}``), as ``ponder serve`` receives it. The answer is asked for with the
provider's structured output where the model takes OpenAI's ``response_format``
(``models.supports_response_format``), and with the schema in the system message always; it is
read from the reply's text (the JSON itself, or the first JSON value in it) and validated
(pydantic's ``TypeAdapter``, or the ``jsonschema`` library). When it does not fit, the model is
shown the problems and asked again, up to ``retries`` times; then ``OutputError``.

The final reply's text is the answer's JSON, and the state keeps the answer's JSON value under
``structured_response`` (LangChain's name; JSON, so any checkpointer stores it as it is).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError
from pydantic_core import to_jsonable_python
from typing_extensions import is_typeddict

from ponder.config import ConfigurationError
from ponder.errors import PonderError
from ponder.models import first_json, supports_response_format

# Keywords one of which a dict must have at its top to be taken for a JSON Schema: any dict
# passes the meta-schema (unknown keywords are allowed), so a typo would mean "anything".
_SCHEMA_KEYWORDS = frozenset({
    "type", "properties", "items", "$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf",
    "enum", "const", "not", "if", "additionalProperties", "required", "prefixItems"})
_NAME = re.compile(r"[^A-Za-z0-9_-]")


class OutputError(PonderError, ValueError):
    """A model's answer did not fit the output schema after its repairs (or there was none).

    ``problems`` lists what was wrong with the last answer; ``text`` is that answer."""

    def __init__(self, message: str, problems: list[str] | None = None, text: str = "") -> None:
        super().__init__(message)
        self.problems = problems or []
        self.text = text


@dataclass(frozen=True)
class OutputSchema:
    """What an answer must be: its ``name``, its JSON ``schema`` and how it is validated.

    Build it with ``of`` (a model, TypedDict or JSON Schema) or ``from_response_format``.
    ``strict`` is passed on to the provider's structured output (OpenAI's ``strict``).
    """

    name: str
    schema: dict[str, Any]
    strict: bool | None = None
    json_object: bool = False  # OpenAI's json_object mode: any JSON object
    adapter: TypeAdapter | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, output: Any) -> OutputSchema:
        """The schema of ``output``: a pydantic model class, a TypedDict class, or a JSON
        Schema dict. ConfigurationError, saying what is accepted, for anything else."""
        if isinstance(output, OutputSchema):
            return output
        if isinstance(output, type) and issubclass(output, BaseModel):
            return cls(_name(output.__name__), output.model_json_schema(),
                       adapter=TypeAdapter(output))
        if isinstance(output, type) and is_typeddict(output):
            try:
                adapter = TypeAdapter(output)
                return cls(_name(output.__name__), adapter.json_schema(), adapter=adapter)
            except PydanticUserError:
                # pydantic takes typing.TypedDict only from Python 3.12; LangChain reads it on
                # any, and the dict it describes is validated by its JSON Schema.
                from langchain_core.utils.function_calling import convert_to_json_schema

                return cls(_name(output.__name__), convert_to_json_schema(output))
        if isinstance(output, dict):
            return cls(_name(str(output.get("title") or "answer")), _checked(output))
        raise ConfigurationError(
            f"output={output!r} is not an answer schema: give a pydantic model class, a "
            "TypedDict class, or a JSON Schema dict (e.g. {'type': 'object', 'properties': "
            "{...}})")

    @classmethod
    def from_response_format(cls, response_format: Any) -> OutputSchema | None:
        """The schema OpenAI's ``response_format`` asks for: None for ``{"type": "text"}`` (or
        None); ConfigurationError naming the problem for a malformed one."""
        if response_format is None:
            return None
        if not isinstance(response_format, dict):
            raise ConfigurationError("response_format must be an object with a 'type': "
                                     "'text', 'json_object' or 'json_schema'")
        kind = response_format.get("type")
        if kind == "text":
            return None
        if kind == "json_object":
            return cls("json_object", {"type": "object"}, json_object=True)
        if kind != "json_schema":
            raise ConfigurationError(f"response_format.type {kind!r} is not supported: use "
                                     "'text', 'json_object' or 'json_schema'")
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ConfigurationError("response_format.json_schema must be an object with "
                                     "'name' and 'schema'")
        name = spec.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ConfigurationError("response_format.json_schema.name must be 1-64 letters, "
                                     "digits, '_' or '-'")
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise ConfigurationError("response_format.json_schema.strict must be true or false")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise ConfigurationError("response_format.json_schema.schema must be a JSON Schema "
                                     "object")
        try:
            checked = _checked(schema) if schema else {}
        except ConfigurationError as exc:
            raise ConfigurationError(f"response_format.json_schema.schema: {exc}") from None
        return cls(name, checked, strict=strict)

    def response_format(self) -> dict[str, Any]:
        """OpenAI's ``response_format`` asking for this schema."""
        if self.json_object:
            return {"type": "json_object"}
        spec: dict[str, Any] = {"name": self.name, "schema": self.schema}
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}

    def instructions(self) -> str:
        """What the system message tells the model about the answer."""
        if self.json_object:
            return "Answer with a JSON object only, with no text around it."
        return ("Answer with a JSON value only, with no text around it, that fits this JSON "
                f"Schema:\n{json.dumps(self.schema)}")

    def parse(self, text: str) -> tuple[Any, list[str]]:
        """The validated answer in a reply's ``text`` (the model's object for a pydantic model),
        and the problems that stopped it (empty when it fits)."""
        try:
            data = json.loads(text)
        except ValueError:
            data = first_json(text)
            if data is None:
                return None, ["the answer is not JSON: write only the JSON value"]
        if self.adapter is not None:
            try:
                return self.adapter.validate_python(data), []
            except ValidationError as exc:
                return None, [f"{'.'.join(map(str, e['loc'])) or '(the whole value)'}: "
                              f"{e['msg']}" for e in exc.errors()]
        validator = jsonschema.validators.validator_for(self.schema)(self.schema)
        problems = [f"{'.'.join(map(str, e.absolute_path)) or '(the whole value)'}: "
                    f"{e.message}" for e in validator.iter_errors(data)]
        return (None, problems) if problems else (data, [])

    def validate(self, data: Any) -> Any:
        """The answer of a JSON value (the state's ``structured_response``); OutputError when it
        does not fit."""
        value, problems = self.parse(json.dumps(data))
        if problems:
            raise OutputError(f"the answer does not fit {self.name}: {'; '.join(problems)}",
                              problems)
        return value


def as_json(value: Any) -> Any:
    """A validated answer as a JSON value (a pydantic object as its dict)."""
    return to_jsonable_python(value)


def _name(name: str) -> str:
    return _NAME.sub("_", name)[:64] or "answer"


def _checked(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` when it is a valid JSON Schema; ConfigurationError saying why not."""
    if not _SCHEMA_KEYWORDS & schema.keys():
        raise ConfigurationError(
            f"{json.dumps(schema)[:200]} is not a JSON Schema: it has none of the keywords "
            "'type', 'properties', '$ref', 'anyOf', ... (write e.g. {'type': 'object', "
            "'properties': {'title': {'type': 'string'}}})")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "its top level"
        raise ConfigurationError(f"the JSON Schema is not valid at {where}: {exc.message}"
                                 ) from None
    return schema


def output_for_run(default: OutputSchema | None, config: dict[str, Any] | None
                   ) -> OutputSchema | None:
    """The schema a run's answer must fit: the run's ``response_format`` (in its config's
    ``configurable``) when given, else the agent's ``default``."""
    configurable = (config or {}).get("configurable") or {}
    if "response_format" in configurable:
        return OutputSchema.from_response_format(configurable["response_format"])
    return default


def with_instructions(system: SystemMessage, output: OutputSchema) -> SystemMessage:
    """The system message with what the answer must be appended."""
    return SystemMessage(f"{system.text}\n\n{output.instructions()}".strip())


def call_options(model: BaseChatModel, output: OutputSchema) -> dict[str, Any]:
    """The call options that ask ``model`` for ``output`` with the provider's structured output
    (none when the model does not take ``response_format``)."""
    return {"response_format": output.response_format()} if supports_response_format(model) \
        else {}


async def typed_reply(model: BaseChatModel, messages: list[BaseMessage], reply: AIMessage,
                      output: OutputSchema, retries: int, options: dict[str, Any]
                      ) -> dict[str, Any]:
    """The state update of a turn whose answer is ``reply`` to ``messages``: the reply whose
    text is the answer's JSON, and the answer's JSON value under ``structured_response``.

    When ``reply`` does not fit ``output`` the model is called again with ``options``, shown
    its answer and the problems, up to ``retries`` times; OutputError (saying what was wrong)
    when it still does not. The answers that did not fit are not kept.
    """
    value, problems = output.parse(reply.text)
    repairs = 0
    while problems:
        if repairs >= retries:
            raise OutputError(
                f"the model's answer did not fit the output schema {output.name!r} after "
                f"{repairs + 1} tries: {'; '.join(problems)}. Raise output_retries, simplify "
                f"the schema, or use a model with structured output. The last answer: "
                f"{reply.text[:300]!r}", problems, reply.text)
        repairs += 1
        # A tool call with no result would be refused by the provider: the text stands for it.
        shown = AIMessage(reply.text) if reply.tool_calls else reply
        messages = [*messages, shown, HumanMessage(
            "Your answer does not fit the required JSON Schema:\n- " + "\n- ".join(problems)
            + "\nAnswer again with only the corrected JSON value.")]
        reply = await model.ainvoke(messages, **options)
        value, problems = output.parse(reply.text) if not reply.tool_calls else (
            None, ["call no tool now: answer with the JSON value only"])
    data = as_json(value)
    try:
        exact = json.loads(reply.text) == data
    except ValueError:
        exact = False
    if not exact:  # the JSON was in prose, or validation changed it: the reply is the JSON
        reply = reply.model_copy(update={"content": json.dumps(data)})
    return {"messages": [reply], "structured_response": data}
