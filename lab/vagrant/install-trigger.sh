#!/bin/sh
# The `trigger` command on a lab VM: a virtualenv in /opt/trigger/venv from
# the wheels the host built (`pip wheel`, synced to the wheels directory),
# so the VM needs no network. The one place that installs trigger: replace
# it with the module's install class when the lab uses that.
set -eu
wheels=/var/lib/trigger-lab/wheels
stamp=/opt/trigger/venv/.wheels
wanted=$(ls "$wheels" | sort | sha256sum)
if [ -x /opt/trigger/venv/bin/trigger ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
# pip runs from Debian's own pip wheel (python3-venv ships it), and nothing is
# byte-compiled: on an emulated CPU ensurepip takes 3 minutes and compiling
# numpy and matplotlib over 15; Python compiles what it imports.
python3 -m venv --without-pip /opt/trigger/venv
pip_wheel=$(ls /usr/share/python-wheels/pip-*.whl | tail -n 1)
pip="/opt/trigger/venv/bin/python $pip_wheel/pip install --quiet --no-compile --no-index --find-links $wheels"
$pip puppet-trigger  # the distribution; its command and package are `trigger`
$pip --force-reinstall --no-deps puppet-trigger  # the checkout changes, its version does not
echo "$wanted" > "$stamp"
