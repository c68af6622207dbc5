# @summary How a trigger reaches its hosts.
#
# `etcd` writes one inbox entry per host; `dummy` writes nothing (for
# testing manifests); `exec` runs the trigger's `exec_cmd` once per host
# (`mco puppet runonce -I {host}`, choria, bolt, ssh), as an argument list,
# never through a shell. All three go through `trigger fire --provider`.
type Trigger::Provider = Enum['etcd', 'dummy', 'exec']
