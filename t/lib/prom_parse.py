#!/usr/bin/python3
# Parse Prometheus text (stdin) with the reference client's parser and print
# its samples as JSON: [{"name", "labels", "value", "family", "type"}].
# A malformed exposition raises, and the test sees a non-zero exit.
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value,
                    "family": fam.name, "type": fam.type,
                    "help": fam.documentation})
json.dump(out, sys.stdout)
