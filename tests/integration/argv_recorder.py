"""Stands in for mco/bolt/ssh in exec provider tests: records its argv and hop."""

import json
import os
import sys

with open(os.environ["ARGV_LOG"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "hop": os.environ.get("TRIGGER_HOP")}) + "\n")
sys.exit(int(os.environ.get("ARGV_EXIT", "0")))
