# A small fleet that uses every kind of relationship `trigger-sim plan`
# reads: role targets, a serial trigger, a `~>` chain, a class-level notify,
# and a loop that only its ttl stops.
#
#   trigger-sim plan --manifest examples/control-repo/manifests/site.pp \
#     --facts examples/control-repo/facts \
#     --modulepath examples/control-repo/site:puppet
node /^web\d+\./ {
  include profile::web
}
node /^lb\d+\./ {
  include profile::lb
}
node 'mon01.example.com' {
  include profile::monitoring
}
node /^app\d+\./ {
  include profile::app
}
node default {
}
