"""Write docs/api.md and docs/openapi.json from the service's OpenAPI schema.

Run after changing an endpoint: `python scripts/api_docs.py`. The tests fail when the committed
reference differs from what this script would write.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs"


def openapi_schema() -> dict[str, Any]:
    from service.app import create_app

    schema: dict[str, Any] = create_app().openapi()
    # The latest accepted timestamp moves with the clock (a running service states it in its own
    # /openapi.json); the committed reference gives the rule in words so it does not go stale.
    event = schema.get("components", {}).get("schemas", {}).get("InteractionEvent", {})
    for option in event.get("properties", {}).get("timestamp", {}).get("anyOf", []):
        option.pop("maximum", None)
    return schema


def render_markdown(schema: dict[str, Any]) -> str:
    lines = [
        "# API reference",
        "",
        f"Generated from the OpenAPI schema of recsys {schema['info']['version']} by "
        "`python scripts/api_docs.py`; the machine-readable schema is `docs/openapi.json`, and a "
        "running service serves it at `/openapi.json` with interactive docs at `/docs`.",
        "",
        "Write and admin endpoints need the header `X-API-Key` (the value of `RECSYS_API_KEY`).",
        "",
    ]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            lines += [f"## `{method.upper()} {path}`", ""]
            if operation.get("summary"):
                lines += [f"**{operation['summary']}** (operation id `{operation.get('operationId')}`)", ""]
            if operation.get("description"):
                lines += [operation["description"].strip(), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                lines += ["| parameter | in | required | description |", "|---|---|---|---|"]
                for parameter in parameters:
                    description = parameter.get("description", "").replace("\n", " ")
                    lines.append(
                        f"| `{parameter['name']}` | {parameter['in']} | "
                        f"{'yes' if parameter.get('required') else 'no'} | {description} |"
                    )
                lines.append("")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body:
                lines += [f"Request body: `{_schema_name(body.get('schema', {}))}`", ""]
            lines += ["| status | meaning |", "|---|---|"]
            for code, response in operation.get("responses", {}).items():
                lines.append(f"| {code} | {response.get('description', '').replace(chr(10), ' ')} |")
            lines.append("")
    lines += ["## Schemas", ""]
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        lines += [f"### `{name}`", ""]
        if component.get("description"):
            lines += [component["description"].strip(), ""]
        properties = component.get("properties", {})
        if properties:
            required = set(component.get("required", []))
            lines += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, spec in properties.items():
                description = spec.get("description", "").replace("\n", " ")
                lines.append(
                    f"| `{field}` | {_schema_name(spec)} | {'yes' if field in required else 'no'} | "
                    f"{description} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _schema_name(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return str(spec["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in spec:
        return " or ".join(_schema_name(option) for option in spec["anyOf"])
    if spec.get("type") == "array":
        return f"list of {_schema_name(spec.get('items', {}))}"
    return str(spec.get("type", "object"))


def rendered() -> dict[Path, str]:
    schema = openapi_schema()
    return {
        DOCS / "openapi.json": json.dumps(schema, indent=2, sort_keys=True) + "\n",
        DOCS / "api.md": render_markdown(schema),
    }


def main() -> int:
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
