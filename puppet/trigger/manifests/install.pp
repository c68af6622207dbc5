# @summary Installs the `trigger` command into a virtualenv and links it at `trigger_bin`.
#
# After this class, the `trigger` command is where every `trigger`, the
# watcher and `trigger::leader` look for it by default
# (`trigger::globals::trigger_bin`, /usr/local/bin/trigger), so manifests
# need no Hiera to find it.
#
# `source` is what pip installs: a wheel or sdist file on the node, or a
# requirement for a package index (`trigger==0.1.0`). Its dependencies come
# from the index, or with `no_index` only from the `find_links`
# directories (a wheelhouse). pip is run as an argument list, never through
# a shell. A file is installed again when its content changes, a
# requirement when the requirement changes (the last one installed is kept
# in VENV_DIR/.trigger-install).
#
# @example From a wheel and a wheelhouse on the node, without any index
#   class { 'trigger::install':
#     source     => '/srv/wheels/trigger-0.1.0-py3-none-any.whl',
#     find_links => ['/srv/wheelhouse'],
#     no_index   => true,
#   }
#
# @example From a package index
#   class { 'trigger::install': source => 'trigger==0.1.0' }
#
# @param source
#   A wheel or sdist path, or a requirement (`trigger`, `trigger==0.1.0`).
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
#   The package index (`--index-url`); unset: pip's own configuration.
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
) {
  include trigger::globals

  if $source =~ /\A-/ or $source =~ /[\s'"\\]/ {
    fail("trigger::install: source must be a file path or a requirement such as 'trigger==0.1.0', got '${source}'")
  }
  if $source =~ /\// and $source !~ /\A\// {
    fail("trigger::install: source '${source}' is a relative path: give the absolute path of the wheel or sdist")
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
