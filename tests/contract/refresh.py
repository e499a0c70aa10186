"""Regenerate ``auth0_signing_keys.json``, the simulator's contract, from Auth0's OpenAPI documents.

    python tests/contract/refresh.py PATH/TO/auth0-keys-api-openapi.yml \
        PATH/TO/auth0-oauth-token-api-openapi.yml

The fixture keeps, of each document, only the paths the simulator serves (the signing-key and
custom-signing-key endpoints, and ``/oauth/token``) and the components they reference, with
the same JSON pointers as upstream, so a ``$ref`` into the fixture reads like one into Auth0's
document. The tests never read the upstream files: they read the fixture this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

FIXTURE = Path(__file__).with_name("auth0_signing_keys.json")
KEYS_PATHS = ("/keys/signing", "/keys/custom-signing")
OAUTH_PATHS = ("/oauth/token",)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()


def _resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def prune(document: dict[str, Any], path_prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The document's ``info`` and the matching paths, plus every component they reach."""
    paths = {
        path: operations
        for path, operations in document["paths"].items()
        if path.startswith(path_prefixes)
    }
    components: dict[str, dict[str, Any]] = {}
    pending = _refs(paths)
    seen: set[str] = set()
    while pending:
        pointer = pending.pop()
        seen.add(pointer)
        _, section, name = pointer.removeprefix("#/").split("/")
        target = _resolve(document, pointer)
        components.setdefault(section, {})[name] = target
        pending |= _refs(target) - seen
    return {
        "openapi": document["openapi"],
        "info": document["info"],
        "paths": paths,
        "components": {section: dict(sorted(c.items())) for section, c in components.items()},
    }


def main(keys_file: str, oauth_file: str) -> None:
    keys = yaml.safe_load(Path(keys_file).read_text())
    oauth = yaml.safe_load(Path(oauth_file).read_text())
    fixture = {
        "_about": (
            "The simulator's contract: the parts of Auth0's OpenAPI documents for the signing-key "
            "endpoints and the token endpoint that tests/integration/test_simulator.py validates "
            "every simulator response against. Derived, unchanged but pruned, by "
            "tests/contract/refresh.py; run it again with newer documents to refresh."
        ),
        "_derived_from": {
            "keys_api": f"{keys['info']['title']}, version {keys['info']['version']} "
            f"(auth0-keys-api-openapi.yml)",
            "oauth_api": f"{oauth['info']['title']}, version {oauth['info']['version']} "
            f"(auth0-oauth-token-api-openapi.yml)",
        },
        "keys_api": prune(keys, KEYS_PATHS),
        "oauth_api": prune(oauth, OAUTH_PATHS),
    }
    FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} KEYS_OPENAPI_YML OAUTH_TOKEN_OPENAPI_YML")
    main(sys.argv[1], sys.argv[2])
