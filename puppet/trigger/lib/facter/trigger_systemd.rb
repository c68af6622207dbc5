# trigger_systemd: true when systemd is the running init (sd_booted(3) test).
#
# Used by trigger::watch::etcd to decide whether to manage a systemd unit, so
# that `puppet apply` in a container without systemd still works.
Facter.add(:trigger_systemd) do
  confine kernel: 'Linux'
  setcode { File.directory?('/run/systemd/system') }
end
