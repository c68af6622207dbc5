"""`trigger-sim plan`: a fleet's cross-node triggers read from its Puppet catalogs.

Layers, each usable alone:

- `importers.load_catalogs(docs)`: `(source name, parsed JSON)` pairs of any of
  the three catalog shapes -> `Fleet` (catalogs, and one error line per bad
  document); `load_catalog_dir(DIR)` reads files into it. A PuppetDB reader
  calls `load_catalogs` with what `/pdb/query/v4/catalogs/<node>` returned.
- `analysis.analyse(catalogs)`: no IO; triggers, notifier leaves, resolved
  targets, loops, fan-in, warnings (`Plan`).
- `report`: the plan as JSON, tables, and `--fail-on` findings.
- `scenario_writer.build_scenario(plan, assumptions)`: the scenario dict that
  `trigger-sim run` runs.
- `compile.compile_catalogs(options)`: catalogs from a manifest and facts, many
  nodes in one Puppet process.
"""

from .analysis import Plan, analyse
from .importers import Fleet, load_catalog_dir, load_catalogs

__all__ = ["Fleet", "Plan", "analyse", "load_catalog_dir", "load_catalogs"]
