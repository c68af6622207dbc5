"""`trigger::install` with real `puppet apply`: the `trigger` command from a
wheel built from this checkout, into a virtualenv under tmp_path, with its
dependencies from a wheelhouse (`--no-index`: no package index at apply
time), then a trigger fired through the installed command into a real etcd.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.local import wheels
from tests.conftest import IN_CI, need
from tests.integration.puppet.puppet_apply import (
    BACKTRACE,
    EXAMPLES,
    LB_HOSTS,
    Apply,
    etcd_dump,
    inbox_entries,
)

pytestmark = [pytest.mark.puppet, pytest.mark.slow]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the checkout's wheel, the wheelhouse of its dependencies)."""
    need("puppet", "puppet")
    if not os.access(wheels.NODE_PYTHON, os.X_OK):
        message = f"{wheels.NODE_PYTHON} not found: install the Debian package python3-venv"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    wheel = wheels.project_wheel(tmp_path_factory.mktemp("wheels"))
    return wheel, wheels.wheelhouse()


def install_manifest(wheel: Path, wheelhouse: Path, root: Path) -> str:
    return (
        "class { 'trigger::install':\n"
        f"  source     => '{wheel}',\n"
        f"  venv_dir   => '{root / 'venv'}',\n"
        f"  link       => '{root / 'bin' / 'trigger'}',\n"
        f"  find_links => ['{wheelhouse}'],\n"
        "  no_index   => true,\n"
        "}\n"
    )


def test_install_from_a_wheel_then_fire_through_the_installed_command(tmp_path, built, etcd_server):
    wheel, wheelhouse = built
    root = tmp_path / "node"
    (root / "bin").mkdir(parents=True)
    apply = Apply(tmp_path / "puppet")

    first = apply(install_manifest(wheel, wheelhouse, root))
    assert first.returncode == 2, first.output  # changes, no failure
    link = root / "bin" / "trigger"
    assert os.readlink(link) == str(root / "venv" / "bin" / "trigger")
    # The command runs from the virtualenv, not from the checkout.
    where = subprocess.run([str(root / "venv" / "bin" / "python"), "-c",
                            "import trigger, sys; print(trigger.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/")
    assert where.stdout.startswith(str(root / "venv")), where.stdout
    version = subprocess.run([str(link), "--help"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and "fire" in version.stdout, version.stderr

    again = apply(install_manifest(wheel, wheelhouse, root))
    assert again.returncode == 0, again.output  # nothing to do the second time

    # The seed's example, unchanged but for its marker file, fires through
    # the installed command.
    marker = tmp_path / "foo"
    seed = (EXAMPLES / "etcd-test.pp").read_text().replace("/tmp/foo", str(marker))
    fire = Apply(tmp_path / "puppet-fire", {"trigger::globals::trigger_bin": str(link),
                                            "trigger::globals::endpoints": etcd_server.endpoint})
    result = fire(seed)
    assert result.returncode == 2, result.output
    assert "Triggered 'refresh'" in result.output
    _, kvs = etcd_dump(etcd_server.endpoint)
    inboxes = inbox_entries(kvs)
    assert sorted(inboxes) == LB_HOSTS
    assert all(len(entries) == 1 for entries in inboxes.values())


def test_a_rebuilt_wheel_of_the_same_version_is_installed_again(tmp_path, built):
    wheel, wheelhouse = built
    root = tmp_path / "node"
    (root / "bin").mkdir(parents=True)
    mine = tmp_path / "wheels" / wheel.name
    mine.parent.mkdir()
    mine.write_bytes(wheel.read_bytes())
    apply = Apply(tmp_path / "puppet")
    assert apply(install_manifest(mine, wheelhouse, root)).returncode == 2
    # The same path, other content (as a rebuild after a code change is).
    with open(mine, "ab") as f:
        f.write(b"\0")  # zip readers ignore trailing bytes after the directory
    result = apply(install_manifest(mine, wheelhouse, root))
    assert result.returncode == 2, result.output
    assert f"Exec[trigger::install: pip install {mine}]/returns: executed successfully" in result.output
    assert apply(install_manifest(mine, wheelhouse, root)).returncode == 0


@pytest.mark.parametrize(
    "source, message",
    [
        ("trigger; rm -rf /", "trigger::install: source must be a file path or a requirement"),
        ("--index-url=http://x", "trigger::install: source must be a file path or a requirement"),
        ("wheels/trigger.whl", "is a relative path: give the absolute path"),
    ],
    ids=["shell", "option", "relative"],
)
def test_bad_source_fails_the_catalog_with_one_clear_line(tmp_path, source, message):
    apply = Apply(tmp_path / "puppet")
    result = apply(f"class {{ 'trigger::install': source => '{source}', venv_dir => '{tmp_path / 'v'}' }}\n")
    assert result.returncode == 1, result.output
    assert message in result.output
    assert not BACKTRACE.search(result.output), result.output
    assert not (tmp_path / "v").exists()


def module_release() -> str:
    import json
    import tomllib

    from tests.integration.puppet.puppet_apply import MODULE, REPO

    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    module_version = json.loads((MODULE / "metadata.json").read_text())["version"]
    assert module_version == project["version"]  # the module and the distribution are released together
    return f"{project['name']}=={project['version']}"


def noop_install(tmp_path, parameters: str) -> "subprocess.CompletedProcess":
    """`trigger::install` with `parameters`, in noop, on this checkout's own virtualenv (so the
    checks that run in noop find a Python) and a link under tmp_path: nothing is changed."""
    from tests.integration.puppet.puppet_apply import REPO

    apply = Apply(tmp_path / "puppet", noop=True)
    return apply(f"class {{ 'trigger::install': venv_dir => '{REPO / '.venv'}',\n"
                 f"  link => '{tmp_path / 'trigger'}', manage_python => false, {parameters} }}\n")


def test_by_default_it_installs_this_modules_pinned_release_from_the_index_the_site_names(tmp_path):
    """No `source`: the pinned release of our own distribution, never a bare name."""
    result = noop_install(tmp_path, "index_url => 'https://packages.example.com/simple'")
    assert result.returncode in (0, 2) and "Error:" not in result.output, result.output
    assert module_release() == "puppet-trigger==0.1.0"
    assert (f"Exec[trigger::install: pip install {module_release()}]/returns: "
            "current_value 'notrun', should be ['0'] (noop)") in result.output, result.output
    assert not (tmp_path / "trigger").exists()


@pytest.mark.parametrize("where", ["", "find_links => ['/srv/wheelhouse'], no_index => true,",
                                   "index_from_pip_config => true,"],
                         ids=["index_url", "find_links", "pip_config"])
def test_a_requirement_with_no_place_named_fails_with_one_line_naming_index_url(tmp_path, where):
    result = noop_install(tmp_path, where)
    if where:  # a wheelhouse or the node's pip configuration is a place the site named
        assert result.returncode in (0, 2), result.output
        return
    assert result.returncode == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "trigger::install: index_url is not set" in errors[0], result.output
    assert f"'{module_release()}'" in errors[0]
    assert not BACKTRACE.search(result.output), result.output


@pytest.mark.parametrize("source", ["trigger", "Trigger==2.3.3"])
def test_the_unrelated_project_named_trigger_is_refused(tmp_path, source):
    result = noop_install(tmp_path, f"source => '{source}', index_url => 'https://packages.example.com/simple'")
    assert result.returncode == 1, result.output
    assert "names an unrelated project" in result.output and "puppet-trigger" in result.output
    assert not BACKTRACE.search(result.output), result.output
