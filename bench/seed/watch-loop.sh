#!/bin/bash
# The seed's watcher, as its etcd provider ran it on every host: a v2
# `etcdctl watch` on the host's key, and a Puppet run queued in task-spooler
# whenever the watch returns. A write landing while the loop is between two
# watches (etcdctl exiting, tsp queueing, etcdctl starting) is never seen.
# usage: watch-loop.sh ENDPOINTS KEY COMMAND...
endpoints=$1 key=$2
shift 2
while true; do
  ETCDCTL_API=2 etcdctl --endpoints "$endpoints" watch "$key" >/dev/null && tsp -- "$@" >/dev/null
done
