#!/bin/sh
# The seed's provider: one v2 `etcdctl set` of the host's key per host.
# usage: fire.sh ENDPOINTS KEY VALUE
ETCDCTL_API=2 exec etcdctl --endpoints "$1" set "$2" "$3" >/dev/null
