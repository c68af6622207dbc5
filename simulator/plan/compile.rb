# Compiles many nodes' catalogs in one Puppet process (trigger-sim plan --manifest).
#
# Reads one JSON request on stdin: {"settings": [argv of Puppet settings],
# "environment": NAME or null, "nodes": [{"name": N, "facts": {...}}]}.
# Writes one JSON line per node to the stdout it started with:
# {"node": N, "catalog": {...}} or {"node": N, "error": "first line"}.
# Puppet's own log lines go to stderr, so they never mix with the JSON.
# `puppet catalog compile` per node costs ~2 s of start-up each; here the
# start-up is paid once and each node costs a few hundredths of a second.
require 'json'

results = STDOUT.dup
STDOUT.reopen(STDERR)
request = JSON.parse(STDIN.read)

begin
  require 'puppet'
  Puppet.initialize_settings(request['settings'])
  Puppet::Util::Log.newdestination(:console)
  Puppet::ApplicationSupport.push_application_context(Puppet::Util::RunMode[:server])
  env = if request['environment']
          Puppet.lookup(:environments).get!(request['environment'])
        else
          Puppet.lookup(:current_environment)
        end
rescue Exception => e # rubocop:disable Lint/RescueException -- any start-up failure is one line
  results.puts(JSON.generate('node' => nil, 'error' => "puppet: #{e.message.lines.first.to_s.strip}"))
  exit 3
end

request['nodes'].each do |spec|
  name = spec['name']
  begin
    facts = Puppet::Node::Facts.new(name, spec['facts'])
    node = Puppet::Node.new(name, facts: facts, environment: env)
    node.trusted_data = { 'authenticated' => 'local', 'certname' => name, 'extensions' => {},
                          'hostname' => name.split('.').first, 'domain' => name.split('.', 2)[1] }
    catalog = Puppet::Resource::Catalog.indirection.find(name, use_node: node)
    results.puts(JSON.generate('node' => name, 'catalog' => catalog.to_data_hash))
  rescue Exception => e # rubocop:disable Lint/RescueException -- a node's failure must not end the others
    results.puts(JSON.generate('node' => name, 'error' => e.message.lines.first.to_s.strip))
  end
  results.flush
end
