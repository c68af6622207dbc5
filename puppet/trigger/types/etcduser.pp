# @summary An etcd user, `NAME` or `NAME:PASSWORD`, for `trigger --user`.
#
# Give it as `Sensitive('name:password')` when it holds a password. The
# module puts the name on command lines and the password only into
# environments (ETCDCTL_PASSWORD). No quotes, backslashes or line breaks
# (the password is written to a systemd environment file).
type Trigger::Etcduser = Variant[
  Pattern[/\A[^:'"\\\r\n][^'"\\\r\n]*\z/],
  Sensitive[Pattern[/\A[^:'"\\\r\n][^'"\\\r\n]*\z/]],
]
