#!/usr/bin/env bash
# Set up what trigger needs, installing only what is missing.
#   scripts/setup.sh           the virtualenv (.venv) with trigger and the test tools
#   scripts/setup.sh --system  also the Debian packages the tests run for real
#   scripts/setup.sh --vagrant also those of the Vagrant lab (libvirt, qemu, debootstrap)
#   scripts/setup.sh --master  also those of the master lab (Puppet Server, PuppetDB, PostgreSQL, Java)
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: its promtool checks contrib/prometheus/alerts.yml.
packages=(etcd-server etcd-client task-spooler puppet puppet-lint puppet-strings metadata-json-lint
          python3-venv python3-pip openssh-server iproute2 vagrant procps prometheus)
# The Vagrant lab (lab/vagrant, lab/box): only with --vagrant, CI's default run does without.
vagrant_packages=(vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86
  qemu-utils debootstrap libvirt-clients dnsmasq-base iptables ebtables)
# The master lab (lab/local/master.py): only with --master, CI's default run does without.
master_packages=(puppetserver puppetdb puppet-terminus-puppetdb postgresql-15 default-jre-headless)
[ "${1:-}" = "--vagrant" ] && packages+=("${vagrant_packages[@]}")
[ "${1:-}" = "--master" ] && packages+=("${master_packages[@]}")
if [ "${1:-}" = "--system" ] || [ "${1:-}" = "--vagrant" ] || [ "${1:-}" = "--master" ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# Reinstall only when the project's dependencies changed.
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  # compat: the checkout goes on sys.path through a plain .pth line. The
  # default editable mode installs an import hook that every python start
  # in the venv imports (pathlib, re, urllib.parse: 15-60 ms here), which a
  # real install does not have and the bench would count against us.
  .venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
  rm -f .venv/.installed-*; touch "$stamp"
fi
