# @summary An etcd user, `NAME` or `NAME:PASSWORD`, for `trigger --user`.
#
# Give it as `Sensitive('name:password')` when it holds a password: the
# module then keeps it out of logs and reports. No quotes, backslashes or
# line breaks (it is written to a systemd environment file).
type Trigger::Etcduser = Variant[
  Pattern[/\A[^:'"\\\r\n][^'"\\\r\n]*\z/],
  Sensitive[Pattern[/\A[^:'"\\\r\n][^'"\\\r\n]*\z/]],
]
