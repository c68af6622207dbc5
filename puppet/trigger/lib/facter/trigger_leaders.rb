# frozen_string_literal: true

# trigger_leaders: { election => holder } for each election this node
# stands in (the file names in CONFIG_DIR/elections/, as trigger::election
# writes them). An election nobody holds maps to nil; the fact is absent
# when the watcher's settings are missing (no trigger::watch::etcd here).
#
# It runs `trigger leader` on the node, before the catalog is compiled, so
# it works with a Puppet server that cannot reach etcd, and its value is
# what etcd said at the start of the run. The settings (command, endpoints,
# TLS, user) are the watcher's, from CONFIG_DIR/client.conf, which
# trigger::watch::etcd writes; CONFIG_DIR is /etc/trigger, or
# $TRIGGER_CONFIG_DIR when set in Puppet's environment.
module TriggerLeadersFact
  NO_HOLDER = 5 # `trigger leader`: nobody holds the election
  TIMEOUT = 10

  module_function

  def config_dir
    ENV['TRIGGER_CONFIG_DIR'] || '/etc/trigger'
  end

  def settings(dir)
    path = File.join(dir, 'client.conf')
    return nil unless File.readable?(path)

    File.readlines(path, chomp: true).each_with_object({}) do |line, acc|
      next if line.start_with?('#') || !line.include?('=')

      key, value = line.split('=', 2)
      acc[key] = value
    end
  end

  def elections(dir)
    Dir.children(File.join(dir, 'elections')).reject { |n| n.start_with?('.') }.sort
  rescue SystemCallError
    []
  end

  def argv(conf, name)
    argv = [conf.fetch('trigger_bin', '/usr/local/bin/trigger'), 'leader']
    # The password (if any) goes in the environment, not on the command line.
    %w[prefix endpoints cacert cert key user].each do |key|
      argv += ["--#{key}", conf[key]] if conf[key]
    end
    argv + ['--', name]
  end

  # The holder, nil when there is none; raises on any other outcome.
  def holder(argv, password)
    out_r, out_w = IO.pipe
    env = password ? { 'ETCDCTL_PASSWORD' => password } : {}
    pid = Process.spawn(env, *argv, in: File::NULL, out: out_w, err: File::NULL)
    out_w.close
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + TIMEOUT
    output = +''
    loop do
      left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      raise "no answer within #{TIMEOUT}s" if left <= 0 || !out_r.wait_readable(left)

      chunk = out_r.read_nonblock(4096, exception: false)
      break if chunk.nil?

      output << chunk unless chunk == :wait_readable
    end
    _, status = Process.wait2(pid)
    pid = nil
    return output.strip.lines.last&.strip if status.exitstatus.zero?
    return nil if status.exitstatus == NO_HOLDER

    raise "trigger leader exited #{status.exitstatus}"
  ensure
    out_r&.close
    if pid
      Process.kill('KILL', pid)
      Process.wait(pid)
    end
  end

  def leaders
    dir = config_dir
    conf = settings(dir)
    return nil unless conf

    elections(dir).to_h do |name|
      [name, holder(argv(conf, name), conf['password'])]
    rescue StandardError => e
      Facter.warn("trigger_leaders: #{name}: #{e.message}")
      [name, nil]
    end
  end
end

Facter.add(:trigger_leaders) do
  confine kernel: 'Linux'
  setcode { TriggerLeadersFact.leaders }
end
