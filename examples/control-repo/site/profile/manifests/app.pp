# Two app nodes poke each other: the exec runs on every Puppet run (no
# refreshonly/onlyif/unless/creates), so A -> B -> A goes on until the
# ttl of 3 refuses the fire at hop 4. `trigger-sim plan` warns about both.
class profile::app (
  String $peer,
) {
  trigger { "poke ${peer}":
    hosts => [$peer],
    ttl   => 3,
  }
  exec { 'rebuild cache':
    command => '/bin/true',
    notify  => Trigger["poke ${peer}"],
  }
}
