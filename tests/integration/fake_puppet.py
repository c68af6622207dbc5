"""Stands in for `puppet agent --test --detailed-exitcodes`: records its argv, talks, exits.

The tests install it as an executable named `puppet` (so a watcher gives it
Puppet's run options by default). It appends {"argv", "run_id"} to
$FAKE_PUPPET_LOG, prints more lines than a run's output tail keeps (on
stdout, and an error on stderr as Puppet does), the last naming the run,
and exits $FAKE_PUPPET_EXIT (2: "changes", in noop "would change").
"""

import json
import os
import sys

code = int(os.environ.get("FAKE_PUPPET_EXIT", "0"))
with open(os.environ["FAKE_PUPPET_LOG"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "run_id": os.environ.get("TRIGGER_RUN_ID")}) + "\n")
for i in range(200):  # more than the tail keeps
    print(f"Info: filler line {i}", flush=True)
mode = " (noop)" if "--noop" in sys.argv else ""
print(f"Notice: /Stage[main]/Main/Service[nginx]/ensure: changed{mode}", flush=True)
if code not in (0, 2):
    print("Error: Could not find package nginx-ultra", file=sys.stderr, flush=True)
print(f"Notice: run {os.environ.get('TRIGGER_RUN_ID')} ends", flush=True)
sys.exit(code)
