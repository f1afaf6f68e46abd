"""Reads deploy/'s YAML for the consistency test (engine/tests/deploy.rs), as JSON on stdout.

Parses every YAML file that is plain YAML (compose, Prometheus, Grafana provisioning, the
chart's Chart.yaml and values.yaml) and lists the `.Values.…` paths the chart's templates use
that values.yaml does not define.
"""
import json
import pathlib
import re
import sys

import yaml

deploy = pathlib.Path(sys.argv[1])
plain = [
    "compose/docker-compose.yml",
    "compose/prometheus.yml",
    "compose/grafana-provisioning/datasources/prometheus.yml",
    "compose/grafana-provisioning/dashboards/vibelux.yml",
    "helm/vibelux/Chart.yaml",
    "helm/vibelux/values.yaml",
]
parsed = {name: yaml.safe_load((deploy / name).read_text()) for name in plain}

values = parsed["helm/vibelux/values.yaml"]
undefined = []
for template in sorted((deploy / "helm/vibelux/templates").glob("*")):
    for path in re.findall(r"\.Values((?:\.[A-Za-z0-9_]+)+)", template.read_text()):
        node = values
        for key in path.strip(".").split("."):
            if not isinstance(node, dict) or key not in node:
                undefined.append(f"{template.name}: .Values{path}")
                break
            node = node[key]

print(json.dumps({"parsed": parsed, "undefined_values": sorted(set(undefined))}))
