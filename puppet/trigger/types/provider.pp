# @summary How a trigger reaches its hosts.
#
# `etcd` writes one inbox entry per host; `dummy` writes nothing (for
# testing manifests). Both go through `trigger fire --provider`.
type Trigger::Provider = Enum['etcd', 'dummy']
