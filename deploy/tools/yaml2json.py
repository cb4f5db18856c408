#!/usr/bin/env python3
"""Convert proto/openapi.yaml to the JSON document the gateway serves at /openapi.json."""
import json
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as src:
    doc = yaml.safe_load(src)
with open(sys.argv[2], "w", encoding="utf-8") as dst:
    json.dump(doc, dst, separators=(",", ":"))
