"""Applies a change log's lines (`_op` = insert or delete, as the engine's file sink writes them)
and prints the rows that remain, one JSON object each, averages to 10 significant digits so that
two ways of summing compare alike."""
import json
import sys
from collections import Counter

held = Counter()
with open(sys.argv[1]) as log:
    for line in log:
        row = json.loads(line)
        op = row.pop("_op", "insert")
        for name, value in row.items():
            if isinstance(value, float):
                row[name] = float(f"{value:.10g}")
        key = json.dumps(row, sort_keys=False)
        held[key] += 1 if op == "insert" else -1
for key, count in held.items():
    if count < 0:
        sys.exit(f"a deletion of a row never inserted: {key}")
    for _ in range(count):
        print(key)
