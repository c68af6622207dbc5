# frozen_string_literal: true

# @summary The current holder of an election (see `trigger::election`), or undef when nobody holds it.
#
# Runs `trigger leader NAME` where the catalog is compiled: on the node
# itself with `puppet apply` (masterless), on the Puppet server otherwise,
# which then needs the `trigger` command and access to etcd. The command is
# an argument list, never a shell line. Settings not given in `options`
# come from trigger::globals.
#
# A holder that cannot be known (etcd unreachable, access denied) fails the
# compilation with the command's one-line message: code that decides who is
# the master must not mistake "etcd is down" for "there is no master".
#
# @example Point an application at the database master
#   $master = trigger::leader('db master')
#   if $master == $facts['networking']['fqdn'] { ... }
Puppet::Functions.create_function(:'trigger::leader') do
  # @param name
  #   The election's name, e.g. `db master`.
  # @param endpoints
  #   etcd client URLs; default from trigger::globals, then ETCDCTL_ENDPOINTS.
  # @param options
  #   `trigger_bin`, `prefix`, `cacert`, `cert`, `key`, `user` (String or
  #   Sensitive) and `timeout` (seconds, default 30); each defaults to
  #   trigger::globals.
  # @return [Optional[String]] the holder's host name, or undef.
  dispatch :leader do
    param 'String[1]', :name
    optional_param 'Optional[Variant[String[1], Array[String[1], 1]]]', :endpoints
    optional_param 'Hash[Enum[trigger_bin, prefix, cacert, cert, key, user, timeout], Any]', :options
    return_type 'Optional[String]'
  end

  def leader(name, endpoints = nil, options = {})
    argv, password = command(name, endpoints, options)
    timeout = Float(options.fetch('timeout', 30))
    output = run(argv, password, timeout)
    case output.exitstatus
    when 0
      # stderr is combined (for the error message): a warning may come
      # first, the holder's name is the last line.
      output.to_s.strip.lines.last&.strip
    when 5 # nobody holds the election (`trigger leader` exits 5)
      nil
    else
      message = output.to_s.strip.lines.last.to_s.strip
      message = "exit #{output.exitstatus}" if message.empty?
      raise Puppet::Error, "trigger::leader('#{name}'): #{message}"
    end
  end

  private

  def command(name, endpoints, options)
    params = site_params
    setting = ->(key) { options.fetch(key) { params[key] } }
    argv = [setting.call('trigger_bin') || '/usr/local/bin/trigger', 'leader']
    argv += ['--prefix', setting.call('prefix')] if setting.call('prefix')
    urls = endpoints || params['endpoints']
    argv += ['--endpoints', Array(urls).join(',')] if urls
    %w[cacert cert key].each do |key|
      argv += ["--#{key}", setting.call(key)] if setting.call(key)
    end
    user = setting.call('user')
    user = user.unwrap if user.is_a?(Puppet::Pops::Types::PSensitiveType::Sensitive)
    # The name on the command line, the password only in the environment.
    user_name, password = user&.split(':', 2)
    argv += ['--user', user_name] if user_name
    # `--` ends the options: a name starting with '-' is still a name.
    [argv + ['--', name], password]
  end

  # trigger::globals, evaluated (and so with its Hiera values) on first use.
  def site_params
    scope = closure_scope
    call_function('include', 'trigger::globals')
    %w[trigger_bin endpoints keyprefix cacert cert key user].to_h do |key|
      value = scope.lookupvar("trigger::globals::#{key}")
      value = nil if value == :undef
      [key == 'keyprefix' ? 'prefix' : key, value]
    end
  end

  def run(argv, password, timeout)
    environment = password ? { 'ETCDCTL_PASSWORD' => password } : {}
    Timeout.timeout(timeout) do
      Puppet::Util::Execution.execute(argv, failonfail: false, combine: true,
                                            override_locale: false,
                                            custom_environment: environment)
    end
  rescue Timeout::Error
    raise Puppet::Error, "trigger::leader('#{argv.last}'): no answer from `trigger leader` within #{timeout}s"
  end
end
