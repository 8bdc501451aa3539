"""Check request and response bodies against the copied Open Payments specs, by operationId.

The specs are OpenAPI 3.1, whose schemas are JSON Schema 2020-12; each spec file is a
standalone document with internal ``#/...`` refs only (see src/opapprove/specs/SOURCE.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
import yaml

SPEC_FILES = ("auth-server.yaml", "resource-server.yaml", "wallet-address-server.yaml")


@dataclass(frozen=True)
class Operation:
    spec: str
    path: str
    method: str
    op: dict[str, Any]


@functools.cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files("opapprove.specs").joinpath(name).read_text("utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    _drop_ref_siblings(doc)
    return doc


def _drop_ref_siblings(node: Any) -> None:
    """Give ``additionalProperties`` beside a ``$ref`` the meaning the spec authors intended.

    The specs put ``additionalProperties: false`` next to ``$ref: incoming-payment`` in a
    few places. Under JSON Schema 2020-12 that sibling applies on its own and refuses every
    property; the Node SDK's validator ignores ``$ref`` siblings (the OpenAPI 3.0 rule), and
    so do we, or no real incoming payment would ever validate.
    """
    if isinstance(node, dict):
        if "$ref" in node:
            node.pop("additionalProperties", None)
        for value in node.values():
            _drop_ref_siblings(value)
    elif isinstance(node, list):
        for value in node:
            _drop_ref_siblings(value)


@functools.cache
def operations() -> dict[str, Operation]:
    out: dict[str, Operation] = {}
    for name in SPEC_FILES:
        doc = _load(name)
        for path, item in doc.get("paths", {}).items():
            for method, op in item.items():
                if isinstance(op, dict) and "operationId" in op:
                    out[op["operationId"]] = Operation(name, path, method.upper(), op)
    return out


def _deref(doc: dict[str, Any], node: Any) -> Any:
    # Siblings of a $ref here are descriptions; the referenced object is what counts.
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


class SpecMismatch(AssertionError):
    pass


# Validators built so far, by spec and schema object (those live in ``_load``'s cache, so an
# id is never reused): building one per body cost as much as validating the body.
_VALIDATORS: dict[tuple[str, int], jsonschema.protocols.Validator] = {}


def _validator(spec: str, schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    key = (spec, id(schema))
    if key not in _VALIDATORS:
        # Refs inside the schema are relative to the spec document: resolve them by
        # embedding the schema as a subschema of the whole document.
        doc = _load(spec)
        full = {
            **doc,
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **_as_root(schema),
        }
        cls = jsonschema.Draft202012Validator
        _VALIDATORS[key] = cls(full, format_checker=cls.FORMAT_CHECKER)
    return _VALIDATORS[key]


def _validate(spec: str, schema: dict[str, Any], body: Any, what: str) -> None:
    errors = sorted(_validator(spec, schema).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        lines = [f"{what} does not match {spec}:"]
        for e in errors[:5]:
            lines.append(f"  at {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}")
        raise SpecMismatch("\n".join(lines))


def _as_root(schema: dict[str, Any]) -> dict[str, Any]:
    # A schema that is only a $ref can't be merged with the doc's other keys reliably;
    # wrap it in allOf so the doc's top-level keys (paths, components) stay as $defs-like data.
    return {"allOf": [schema]}


def check_request_body(operation_id: str, body: Any) -> None:
    op = operations()[operation_id]
    doc = _load(op.spec)
    rb = _deref(doc, op.op.get("requestBody"))
    if rb is None:
        assert body in (None, b"", {}), f"{operation_id} takes no body, got {body!r}"
        return
    schema = rb["content"]["application/json"]["schema"]
    _validate(op.spec, schema, body, f"request body of {operation_id}")


def check_response(operation_id: str, status: int, body: Any) -> None:
    op = operations()[operation_id]
    doc = _load(op.spec)
    responses = op.op.get("responses", {})
    key = str(status)
    if key not in responses:
        raise SpecMismatch(
            f"{operation_id} answered {status}, which its spec does not list "
            f"({', '.join(responses)})"
        )
    resp = _deref(doc, responses[key])
    content = (resp or {}).get("content")
    if not content:
        assert body in (None, b"", "", {}), f"{operation_id} {status} has no body in the spec"
        return
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return
    _validate(op.spec, schema, body, f"{operation_id} {status} response")
