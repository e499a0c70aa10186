"""What several tests share: receivers, daemon and deployment helpers, certificates, the one
way to wait (``delivery.eventually``), and where the repository is."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root: tests find its files from here, never from outside it."""
