"""Benchmarks of trigger, each measured side by side with a baseline in the same run.

`python -m bench --quick` (under 3 minutes) or `python -m bench --full`
prints a table and writes JSON; docs/benchmarks.md explains the items and
holds the latest full results. The baselines are etcd's own floor (a raw
put -> watch event with the etcd3 client) and the seed's approach (a bash
loop of v2 `etcdctl watch` + `tsp` per host, bench/seed/watch-loop.sh).
Every comparison is a ratio, ours / baseline, because the machines these
run on are shared and noisy.
"""
