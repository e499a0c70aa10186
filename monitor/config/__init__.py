"""YAML configuration -> frozen, validated ``Settings``.

Loading reports every problem it finds at once, each with its key path and YAML line
(``tenants[1].domain: ... (line 14)``), as one ``ConfigError``:

- ``reader.py``: YAML text -> plain values and the line of every key; ``${VAR}`` expansion;
  the size, depth and alias limits.
- ``values.py``: the value types (durations, names, hosts, URLs) and their messages.
- ``models.py``, ``destinations.py``: the models; one per destination kind, told apart by ``kind``.
- ``checks.py``: the checks that look at several values at once, as a plain pass.
- ``loading.py``: ``load_config`` / ``parse_config``, and pydantic's errors -> problem lines.

Values of secret keys are never echoed.
"""

from __future__ import annotations

from monitor.config.destinations import (
    DEFAULT_PAGERDUTY_URL,
    AlertmanagerDestination,
    DestinationConfig,
    DiscordDestination,
    GoogleChatDestination,
    PagerDutyDestination,
    SlackDestination,
    TeamsDestination,
    WebhookDestination,
    destination_url_problem,
    parse_destination,
    webhook_key,
)
from monitor.config.loading import load_config, parse_config
from monitor.config.models import (
    ConfirmConfig,
    Defaults,
    LeaseConfig,
    MetricsConfig,
    RetentionConfig,
    Settings,
    TenantConfig,
    WebConfig,
)
from monitor.config.problems import is_secret_key, yaml_spelling
from monitor.config.reader import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, MIN_ALIAS_BUDGET
from monitor.config.values import (
    DEFAULT_CONFIRM_POLLS,
    DEFAULT_INTERVAL,
    DEFAULT_JITTER,
    DEFAULT_LEASE_TTL,
    DEFAULT_LISTEN,
    DEFAULT_TIMEOUT,
    DestinationKind,
    parse_duration,
)

__all__ = [
    "DEFAULT_CONFIRM_POLLS",
    "DEFAULT_INTERVAL",
    "DEFAULT_JITTER",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_LISTEN",
    "DEFAULT_PAGERDUTY_URL",
    "DEFAULT_TIMEOUT",
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MIN_ALIAS_BUDGET",
    "AlertmanagerDestination",
    "ConfirmConfig",
    "Defaults",
    "DestinationConfig",
    "DestinationKind",
    "DiscordDestination",
    "GoogleChatDestination",
    "LeaseConfig",
    "MetricsConfig",
    "PagerDutyDestination",
    "RetentionConfig",
    "Settings",
    "SlackDestination",
    "TeamsDestination",
    "TenantConfig",
    "WebConfig",
    "WebhookDestination",
    "destination_url_problem",
    "is_secret_key",
    "load_config",
    "parse_config",
    "parse_destination",
    "parse_duration",
    "webhook_key",
    "yaml_spelling",
]
