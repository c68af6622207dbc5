# @summary Where trigger keeps its keys in etcd: starts with '/', no trailing '/'.
type Trigger::Keyprefix = Pattern[/\A(\/[A-Za-z0-9_.\-]+)+\z/]
