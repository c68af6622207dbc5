"""trigger: Puppet-native cross-node orchestration over etcd."""

import os

# etcd3's generated stubs predate protobuf 4: they load only with the pure
# Python backend, which must be chosen before protobuf is first imported.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
