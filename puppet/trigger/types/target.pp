# @summary One entry of a trigger's `hosts`: a host name or `role:NAME`.
type Trigger::Target = Variant[Trigger::Hostname, Trigger::Roletarget]
