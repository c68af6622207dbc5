# @summary One etcd client URL, or several (tried in order).
type Trigger::Endpoints = Variant[Trigger::Endpoint, Array[Trigger::Endpoint, 1]]
