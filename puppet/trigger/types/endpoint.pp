# @summary An etcd client URL such as `http://10.0.0.1:2379`.
type Trigger::Endpoint = Pattern[/\Ahttps?:\/\/[A-Za-z0-9_.\-\[\]:]+\/?\z/]
