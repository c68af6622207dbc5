# frozen_string_literal: true

# @summary The nodes PuppetDB knows by a class (or any resource) or a PQL query, for a trigger's `hosts`.
#
# The seed's `query_nodes('Class[Profile::Loadbalancer]', fqdn)` (Erik
# Dalén's puppetdbquery) with PuppetDB's own query language underneath: it
# calls `puppetdb_query`, which the Puppet server has with the PuppetDB
# terminus (Debian: puppet-terminus-puppetdb) and which reaches PuppetDB
# with the server's own certificate (puppetdb.conf). Active nodes only, as
# PuppetDB answers; sorted, each once.
#
# A query PuppetDB cannot answer (a PQL syntax error, PuppetDB down) fails
# the compilation with a message naming the query: a trigger must not
# quietly lose its hosts.
#
# @example The seed's load balancers, by class
#   trigger { 'refresh load balancers':
#     hosts => trigger::query_nodes('Class[Profile::Loadbalancer]', fqdn),
#   }
# @example PQL: every Debian node's certname
#   trigger::query_nodes('inventory[certname] { facts.os.family = "Debian" }')
Puppet::Functions.create_function(:'trigger::query_nodes') do
  # @param query
  #   `Type[title]` (the nodes whose catalog has that resource, e.g.
  #   `Class[Profile::Loadbalancer]`), or PQL that projects `certname`.
  # @param fact
  #   Return this fact of each node (e.g. `fqdn`, `networking.fqdn`)
  #   instead of its certname.
  # @return [Array[String]] the nodes' certnames (or facts).
  dispatch :query_nodes do
    param 'String[1]', :query
    optional_param 'String[1]', :fact
    return_type 'Array[String]'
  end

  def query_nodes(query, fact = nil)
    pql = nodes_pql(query.strip)
    pql = "inventory[certname, facts.#{fact}] { certname in #{pql} }" if fact
    rows = begin
      call_function('puppetdb_query', pql)
    rescue StandardError => e
      raise Puppet::ParseError, "trigger::query_nodes('#{query}'): PuppetDB could not answer #{pql}: " \
                                "#{e.message.lines.first.to_s.strip}"
    end
    key = fact ? "facts.#{fact}" : 'certname'
    values = rows.map { |row| row[key] }
    if values.any? { |value| !value.is_a?(String) }
      raise Puppet::ParseError, "trigger::query_nodes('#{query}'): the rows have no #{key}" \
                                "#{fact ? '' : ': project it, e.g. nodes[certname] { ... }'}"
    end
    values.uniq.sort
  end

  # Type[title] as the nodes whose catalog has it, as trigger/puppetdb.py's pql() does.
  def nodes_pql(query)
    match = /\A([A-Za-z]\w*(?:::[A-Za-z]\w*)*)\[(.+)\]\z/m.match(query)
    return query unless match
    type = capitalize(match[1])
    title = match[2].strip.delete_prefix("'").delete_suffix("'").delete_prefix('"').delete_suffix('"')
    title = capitalize(title) if type == 'Class'
    "resources[certname] { type = #{type.to_json} and title = #{title.to_json} }"
  end

  def capitalize(name)
    name.split('::').map { |part| part[0].upcase + part[1..] }.join('::')
  end
end
