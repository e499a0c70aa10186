"""The checks that look at several values at once, as one plain pass producing problems.

Each check reads plain values (what the YAML gave, or a model's fields that were set) and
returns ``(message, path)`` pairs. ``parse_config`` runs them over the whole document, so they
are reported together with the type errors and with their lines; a model built directly in
code runs its own after validation (``run_by_caller`` tells them apart).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationInfo

from monitor.config.problems import KeyPath, Problem
from monitor.config.values import DESTINATION_KINDS

__all__ = [
    "CHECKED",
    "Found",
    "destination_problems",
    "document_problems",
    "given_fields",
    "name_problems",
    "raise_found",
    "run_by_caller",
    "tenant_problems",
]

Found = tuple[str, KeyPath]
"""A problem's message and its key path (relative to what was checked)."""

CHECKED = "cross_checked"
"""Validation context key: the caller runs ``document_problems`` itself."""


def run_by_caller(info: ValidationInfo) -> bool:
    """Whether the caller (``parse_config``) runs these checks, so a model must not."""
    return bool((info.context or {}).get(CHECKED))


def given_fields(model: BaseModel) -> dict[str, Any]:
    """The fields of ``model`` that were set (not left to their default), as the YAML would
    give them."""
    return {name: getattr(model, name) for name in model.model_fields_set}


def raise_found(found: Iterable[Found]) -> None:
    """For a model built directly: its problems as one ``ValueError``."""
    lines = [Problem(message, path or None).render() for message, path in found]
    if lines:
        raise ValueError("; ".join(lines))


def _given(data: Mapping[str, Any], key: str) -> bool:
    return data.get(key) is not None


def tenant_problems(tenant: Mapping[str, Any]) -> list[Found]:
    """Exactly one of domain/base_url and exactly one way to authenticate."""
    found: list[Found] = []
    if _given(tenant, "domain") and _given(tenant, "base_url"):
        found.append(("domain and base_url are both set (set exactly one)", ()))
    elif not _given(tenant, "domain") and not _given(tenant, "base_url"):
        found.append(("missing domain or base_url (set exactly one)", ()))
    has_id, has_secret = _given(tenant, "client_id"), _given(tenant, "client_secret")
    has_token = _given(tenant, "token")
    if has_token and (has_id or has_secret):
        found.append(("client credentials and token are both set (set exactly one)", ()))
    elif has_id and not has_secret:
        found.append(("missing", ("client_secret",)))
    elif has_secret and not has_id:
        found.append(("missing", ("client_id",)))
    elif not (has_id or has_token):
        found.append(("missing credentials (set client_id and client_secret, or token)", ()))
    return found


def destination_problems(destination: Mapping[str, Any]) -> list[Found]:
    """Alertmanager needs its ``urls`` (its ``url`` is reported as an option it does not take);
    ``events`` and ``min_severity`` exclude each other."""
    found: list[Found] = []
    kind = destination.get("kind")
    if kind not in DESTINATION_KINDS:
        return found  # validation reports the kind, and the rest depends on it
    if kind == "alertmanager" and not _given(destination, "url") and not destination.get("urls"):
        found.append(("missing", ("urls",)))
    events = destination.get("events")
    if isinstance(events, list | tuple) and events and _given(destination, "min_severity"):
        message = "set either events or min_severity, not both (an event type has one severity)"
        found.append((message, ("min_severity",)))
    return found


def name_problems(tenants: object, destinations: object) -> list[Found]:
    """Unique tenant and destination names; every tenant a destination names is configured."""
    found = _duplicates("tenant", "tenants", tenants)
    found += _duplicates("destination", "destinations", destinations)
    if not isinstance(destinations, list | tuple) or not isinstance(tenants, list | tuple):
        return found
    known = [name for name in map(_name_of, tenants) if isinstance(name, str)]
    for index, destination in enumerate(destinations):
        wanted = destination.get("tenants") if isinstance(destination, Mapping) else None
        if not isinstance(wanted, list | tuple):
            continue
        for position, name in enumerate(wanted):
            if isinstance(name, str) and name not in known:
                message = f"unknown tenant {name!r} (tenants are: {', '.join(known)})"
                found.append((message, ("destinations", index, "tenants", position)))
    return found


def document_problems(data: Mapping[str, Any]) -> list[Found]:
    """Every check over a whole configuration document; paths from its top."""
    tenants, destinations = data.get("tenants"), data.get("destinations")
    found: list[Found] = []
    for key, items, check in (
        ("tenants", tenants, tenant_problems),
        ("destinations", destinations, destination_problems),
    ):
        if isinstance(items, list | tuple):
            for index, item in enumerate(items):
                if isinstance(item, Mapping):
                    found += [(message, (key, index, *path)) for message, path in check(item)]
    return found + name_problems(tenants, destinations)


def _name_of(item: object) -> object:
    return item.get("name") if isinstance(item, Mapping) else None


def _duplicates(noun: str, key: str, items: object) -> list[Found]:
    if not isinstance(items, list | tuple):
        return []
    first_index: dict[str, int] = {}
    found: list[Found] = []
    for index, item in enumerate(items):
        name = _name_of(item)
        if not isinstance(name, str):
            continue
        if name in first_index:
            message = f"duplicate {noun} name {name!r}, already used by {key}[{first_index[name]}]"
            found.append((message, (key, index, "name")))
        else:
            first_index[name] = index
    return found
