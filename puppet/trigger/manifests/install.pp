# @summary Installs the `trigger` command into a virtualenv and links it at `trigger_bin`.
#
# After this class, the `trigger` command is where every `trigger`, the
# watcher and `trigger::leader` look for it by default
# (`trigger::globals::trigger_bin`, /usr/local/bin/trigger), so manifests
# need no Hiera to find it.
#
# `source` is what pip installs: by default this module's own release of
# the Python distribution, pinned (`puppet-trigger==0.1.0`); or a wheel or
# sdist file on the node; or another requirement. The name `trigger` on
# public package indexes is an unrelated project, so it is refused. A
# requirement needs a place the site names: `index_url` (the site's
# package index), `find_links` (a wheelhouse), or `index_from_pip_config`
# when the node's pip configuration names the index. Without one the
# catalog fails with one line naming `index_url`: pip's built-in index
# cannot be trusted to hold our distribution under its name. A file's
# dependencies come from the same places. pip is run as an argument list,
# never through a shell. A file is installed again when its content
# changes, a requirement when the requirement changes (the last one
# installed is kept in VENV_DIR/.trigger-install).
#
# @example The pinned release from the site's package index
#   class { 'trigger::install': index_url => 'https://packages.example.com/simple' }
#
# @example From a wheel and a wheelhouse on the node, without any index
#   class { 'trigger::install':
#     source     => '/srv/wheels/puppet_trigger-0.1.0-py3-none-any.whl',
#     find_links => ['/srv/wheelhouse'],
#     no_index   => true,
#   }
#
# @param source
#   A wheel or sdist path, or a requirement (`puppet-trigger==0.1.0`, the
#   default: this module's release).
# @param venv_dir
#   The virtualenv (made with `python -m venv`).
# @param python
#   The Python that makes the virtualenv (3.11 or later).
# @param manage_python
#   Install `python_packages` (the `venv` module) first.
# @param python_packages
#   The packages that give `python -m venv`.
# @param link
#   Where the command is linked; default `trigger::globals::trigger_bin`.
# @param find_links
#   Directories pip also takes packages from (`--find-links`).
# @param no_index
#   Use no package index, only `find_links` (`--no-index`).
# @param index_url
#   The package index that serves `source` and its dependencies
#   (`--index-url`). No default: the site names it.
# @param index_from_pip_config
#   The node's pip configuration (pip.conf, `PIP_INDEX_URL`) names the
#   index: a requirement may then be installed without `index_url`.
class trigger::install (
  String[1] $source,
  Trigger::Absolutepath $venv_dir,
  Trigger::Absolutepath $python,
  Boolean $manage_python,
  Array[String[1]] $python_packages,
  Optional[Trigger::Absolutepath] $link = undef,
  Array[Trigger::Absolutepath] $find_links = [],
  Boolean $no_index = false,
  Optional[Pattern[/\Ahttps?:\/\/\S+\z/]] $index_url = undef,
  Boolean $index_from_pip_config = false,
) {
  include trigger::globals

  if $source =~ /\A-/ or $source =~ /[\s'"\\]/ {
    fail("trigger::install: source must be a file path or a requirement such as 'puppet-trigger==0.1.0', got '${source}'")
  }
  if $source =~ /\// and $source !~ /\A\// {
    fail("trigger::install: source '${source}' is a relative path: give the absolute path of the wheel or sdist")
  }
  if $source =~ /\A(?i:trigger)([=<>!~\[;@]|\z)/ {
    $unrelated = 'names an unrelated project of public package indexes'
    fail("trigger::install: source '${source}' ${unrelated}; this module's distribution is puppet-trigger")
  }
  if $source !~ /\A\// and !$index_url and $find_links.empty and !$index_from_pip_config {
    $alternatives = 'or find_links, a wheelhouse; or source, a wheel file'
    fail("trigger::install: index_url is not set: name the package index that serves '${source}' (${alternatives})")
  }
  if $no_index and $find_links.empty and $source !~ /\A\// {
    fail("trigger::install: no_index => true needs find_links (a wheelhouse) or a file as source, got '${source}'")
  }

  $_link = $link.lest || { $trigger::globals::trigger_bin }
  $venv_python = "${venv_dir}/bin/python"
  $stamp = "${venv_dir}/.trigger-install"
  $pip_options = ['--disable-pip-version-check', '--no-input'] + ($no_index ? { true => ['--no-index'], default => [] }
  ) + $find_links.map |$dir| { "--find-links=${dir}" } + $index_url.then |$url| { ["--index-url=${url}"] }.lest || { [] }

  # What was installed last: the source, and for a file its SHA-256, so a
  # rebuilt wheel of the same version is installed again.
  $stamp_text = @(PY)
    import hashlib, os, sys
    def stamp_text(source):
        digest = "-"
        if os.path.isfile(source):
            with open(source, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        return source + "\n" + digest + "\n"
    | PY
  $is_current = @("PY")
    ${stamp_text}
    stamp, source = sys.argv[1:3]
    try:
        with open(stamp) as f:
            sys.exit(0 if f.read() == stamp_text(source) else 1)
    except OSError:
        sys.exit(1)
    | PY
  # pip once with the dependencies; a file again without them, forced, in
  # case the same version is installed from an older build.
  $install = @("PY")
    ${stamp_text}
    import subprocess
    stamp, source, options = sys.argv[1], sys.argv[2], sys.argv[3:]
    pip = [sys.executable, "-m", "pip", "install", *options]
    subprocess.run([*pip, source], check=True)
    if os.path.isfile(source):
        subprocess.run([*pip, "--no-deps", "--force-reinstall", source], check=True)
    with open(stamp, "w") as f:
        f.write(stamp_text(source))
    | PY

  if $manage_python {
    package { $python_packages:
      ensure => installed,
      before => Exec["trigger::install: virtualenv ${venv_dir}"],
    }
  }

  exec { "trigger::install: virtualenv ${venv_dir}":
    command => [$python, '-m', 'venv', $venv_dir],
    creates => $venv_python,
    cwd     => '/',
  }

  exec { "trigger::install: pip install ${source}":
    command   => [$venv_python, '-c', $install, $stamp, $source] + $pip_options,
    unless    => [[$venv_python, '-c', $is_current, $stamp, $source]],  # one argv
    cwd       => '/',
    timeout   => 1800,
    logoutput => on_failure,
    require   => Exec["trigger::install: virtualenv ${venv_dir}"],
  }

  file { $_link:
    ensure  => link,
    target  => "${venv_dir}/bin/trigger",
    require => Exec["trigger::install: pip install ${source}"],
  }
}
