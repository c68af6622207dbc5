# @summary An etcd user `NAME` or `NAME:PASSWORD` (String or Sensitive) as [name, password].
#
# The name goes on the command line (`--user NAME`); the password never
# does (the process list shows command lines): callers hand it to the
# command as ETCDCTL_PASSWORD in its environment.
#
# @param user
#   The user setting, or undef.
# @return [Tuple[Optional[String], Optional[String]]] the name and the password, each undef when absent.
function trigger::split_user(
  Optional[Trigger::Etcduser] $user,
) >> Tuple[Optional[String], Optional[String]] {
  $text = $user ? {
    Sensitive => $user.unwrap,
    default   => $user,
  }
  $text.then |$t| {
    $parts = $t.match(/\A([^:]+)(?::(.*))?\z/)
    [$parts[1], $parts[2]]
  }.lest || { [undef, undef] }
}
