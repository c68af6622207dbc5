# @summary The directory where the watcher reads this node's roles and elections.
#
# Manages DIR, DIR/roles and DIR/elections. The last two are purged: a file
# there that no `trigger::role` or `trigger::election` of this catalog
# declares is removed, and the watcher drops that role or candidacy within
# a few seconds (it re-reads the directory; no restart).
#
# Declared, once per directory, by `trigger::watch::etcd`, `trigger::role`
# and `trigger::election` (whichever comes first); not meant to be declared
# directly.
define trigger::config_dir {
  file { $title:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }
  ['roles', 'elections'].each |$kind| {
    file { "${title}/${kind}":
      ensure       => directory,
      owner        => 'root',
      group        => 'root',
      mode         => '0755',
      recurse      => true,
      recurselimit => 1,
      purge        => true,
      force        => true,
    }
  }
}
