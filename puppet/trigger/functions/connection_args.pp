# @summary The etcd connection options of a `trigger` command line.
#
# Each setting is the caller's own value, else the site's from
# trigger::globals; an option is passed only when it has a value, so an
# unset one leaves the command to its environment (ETCDCTL_ENDPOINTS,
# ETCDCTL_CACERT, ...) and its defaults.
#
# @param who
#   How error messages name the caller, e.g. `Trigger['x']`.
# @param endpoints
#   etcd client URLs.
# @param cacert
#   CA certificate file.
# @param cert
#   Client certificate file; needs `key`.
# @param key
#   Client key file; needs `cert`.
# @return [Array[String]] `--endpoints`, `--cacert`, `--cert`, `--key` and their values.
function trigger::connection_args(
  String $who,
  Optional[Trigger::Endpoints] $endpoints = undef,
  Optional[Trigger::Absolutepath] $cacert = undef,
  Optional[Trigger::Absolutepath] $cert = undef,
  Optional[Trigger::Absolutepath] $key = undef,
) >> Array[String] {
  include trigger::globals

  $_endpoints = $endpoints.lest || { $trigger::globals::endpoints }
  $settings = {
    '--endpoints' => $_endpoints.then |$urls| { [$urls].flatten.join(',') },
    '--cacert'    => $cacert.lest || { $trigger::globals::cacert },
    '--cert'      => $cert.lest || { $trigger::globals::cert },
    '--key'       => $key.lest || { $trigger::globals::key },
  }
  if ($settings['--cert'] =~ Undef) != ($settings['--key'] =~ Undef) {
    $given = $settings['--cert'] ? { undef => 'key', default => 'cert' }
    fail("${who}: cert and key go together: ${given} is set, the other is not")
  }
  $settings.filter |$option, $value| { $value =~ NotUndef }.map |$option, $value| { [$option, $value] }.flatten
}
