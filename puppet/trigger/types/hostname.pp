# @summary A host name or FQDN as `trigger` accepts it.
#
# Letters, digits, '.', '-' and '_' only: no spaces, no '/', nothing a shell
# would read as syntax. The same rule as `check_host` in trigger/records.py,
# so a name Puppet accepts is one the `trigger` command accepts too.
type Trigger::Hostname = Pattern[/\A[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?\z/]
