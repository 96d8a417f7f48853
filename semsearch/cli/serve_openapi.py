"""The OpenAPI 3.1 document of `semsearch serve`'s HTTP API, made from the MCP tools' own schemas
(one source for both: an argument added to a tool is in the API and its description at once)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "one line saying what went wrong",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
        }
    },
}
_STATUSES = {
    "401": "no token, or a wrong one",
    "403": "a path outside the project",
    "404": "not in the index",
    "413": "the request is too large",
    "422": "an argument is missing, unknown or out of bounds",
    "503": "no index here (yet)",
    "504": "the call ran over the time limit",
}


def openapi_document(tools: dict[str, Any], version: str, *, token: bool) -> dict[str, Any]:
    """The document for *tools* ({name: the SDK's tool, with its input and output schemas and
    its description})."""
    paths: dict[str, Any] = {}
    for name, tool in sorted(tools.items()):
        schema = tool.input_schema
        description = " ".join((tool.description or name).split())
        output = tool.output_schema or {"type": "object"}
        responses = {"200": {"description": "the tool's result",
                             "content": {"application/json": {"schema": output}}},
                     **{code: {**_ERROR, "description": text} for code, text in _STATUSES.items()}}  # fmt: skip
        body = {"required": False, "content": {"application/json": {"schema": schema}}}
        item: dict[str, Any] = {"post": {"operationId": f"{name}_post", "summary": name, "description": description,
                                         "requestBody": body, "responses": responses}}  # fmt: skip
        if name != "index":
            item["get"] = {"operationId": name, "summary": name, "description": description, "parameters": _parameters(schema),
                           "responses": responses}  # fmt: skip
        paths[f"/{name}"] = item
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "semsearch", "version": version,
                 "description": "Semantic and keyword search over an index's files: the MCP tools over HTTP."},
        "paths": paths,
    }  # fmt: skip
    if token:
        document["components"] = {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
        document["security"] = [{"bearer": []}]
    return document


def _parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    out = []
    for key, prop in schema.get("properties", {}).items():
        parameter: dict[str, Any] = {"name": key, "in": "query", "required": key in required, "schema": prop}
        options = prop.get("anyOf") or [prop]
        if any(isinstance(o, dict) and o.get("type") == "array" for o in options):
            parameter.update(style="form", explode=True)  # a list: the parameter repeated
        out.append(parameter)
    return out
