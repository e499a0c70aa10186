"""Write base/prometheusrule.yaml from deploy/prometheus/rules.yml (the one source of the rules).

Run after editing rules.yml:  python3 deploy/kubernetes/render_prometheusrule.py
tests/integration/test_deploy_files.py fails while the two files disagree.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "rules.yml"
TARGET = HERE / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/kubernetes/render_prometheusrule.py:
# edit rules.yml, then run the script. For the Prometheus Operator; your Prometheus must
# select it (kube-prometheus-stack: its release label, or ruleSelectorNilUsesHelmValues=false).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: keywatch
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule manifest: rules.yml from its ``groups:`` line on, under ``spec:``."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = [f"  {line}" if line else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main() -> None:
    TARGET.write_text(render(RULES.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
