"""The module as a Forge user expects it: PDK's layout, metadata.json that
metadata-json-lint accepts, module data instead of a params class, and a
REFERENCE.md that is what puppet-strings makes of the code's comments now.
"""

from __future__ import annotations

import json
import re
import sys
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import IN_CI, need
from tests.integration.puppet.puppet_apply import MODULE, Apply

pytestmark = pytest.mark.puppet

# PDK's layout: what `pdk new module` and `pdk new class/task` create.
LAYOUT = ["metadata.json", "README.md", "REFERENCE.md", "CHANGELOG.md", "hiera.yaml",
          "data/common.yaml", "manifests", "examples", "functions", "types", "templates",
          "lib/puppet/functions", "lib/facter", "tasks/fire.json", "tasks/fire.py"]


def test_pdk_layout_and_module_data_instead_of_a_params_class():
    missing = [path for path in LAYOUT if not (MODULE / path).exists()]
    assert missing == []
    assert not (MODULE / "manifests" / "params.pp").exists()
    assert not any("::params" in p.read_text() for p in MODULE.rglob("*.pp"))
    hiera = yaml.safe_load((MODULE / "hiera.yaml").read_text())
    assert hiera["version"] == 5 and hiera["hierarchy"][-1]["path"] == "common.yaml"
    data = yaml.safe_load((MODULE / "data" / "common.yaml").read_text())
    # Every key is a parameter of one of the module's classes.
    for key in data:
        if key == "lookup_options":
            continue
        cls, _, param = key.rpartition("::")
        manifest = MODULE / "manifests" / (cls.split("::", 1)[1].replace("::", "/") + ".pp")
        assert f"${param}" in manifest.read_text(), key


def metadata_lint(path) -> subprocess.CompletedProcess:
    lint = need("metadata-json-lint", "metadata-json-lint")
    return subprocess.run([lint, "--strict-dependencies", "--strict-puppet-version", str(path)],
                          capture_output=True, text=True, check=False, timeout=60)


def test_metadata_json_is_complete_and_passes_metadata_json_lint(tmp_path):
    done = metadata_lint(MODULE / "metadata.json")
    assert done.returncode == 0, done.stdout + done.stderr
    metadata = json.loads((MODULE / "metadata.json").read_text())
    # Beyond what the linter requires: what the Forge shows a user.
    for field in ("project_page", "issues_url", "operatingsystem_support", "requirements"):
        assert metadata.get(field), field
    (puppet,) = [r for r in metadata["requirements"] if r["name"] == "puppet"]
    assert puppet["version_requirement"].startswith(">= 7")
    # The linter does fail a broken file.
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps({k: v for k, v in metadata.items() if k != "source"}))
    done = metadata_lint(broken)
    assert done.returncode != 0 and "source" in done.stdout + done.stderr


def test_module_data_gives_the_defaults_and_a_sites_hiera_overrides_them(tmp_path):
    apply = Apply(tmp_path / "puppet", {"trigger::watch::etcd::package_name": "site-tsp"})
    result = apply(
        "include trigger::globals\n"
        "notice(\"bin=${trigger::globals::trigger_bin} prefix=${trigger::globals::keyprefix}\")\n"
        "notice(lookup('trigger::install::venv_dir'))\n"
        "notice(lookup('trigger::watch::etcd::package_name'))\n"
    )
    assert result.returncode == 0, result.output
    # trigger_bin comes from the test's Hiera (Apply sets it), keyprefix from the module.
    assert "prefix=/puppet_trigger/events" in result.output
    assert "/usr/local/lib/trigger" in result.output and "site-tsp" in result.output


def test_reference_md_is_what_puppet_strings_makes_of_the_code_now(tmp_path):
    need("puppet", "puppet")
    copy = tmp_path / "trigger"
    # A copy: puppet-strings leaves .yardoc/ where it runs.
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns("REFERENCE.md"))
    done = subprocess.run(["puppet", "strings", "generate", "--format", "markdown",
                           "--out", "REFERENCE.md"], cwd=copy, capture_output=True, text=True,
                          check=False, timeout=300)
    if "Unknown Puppet subcommand 'strings'" in done.stdout + done.stderr:
        message = "puppet strings not found: install the Debian package puppet-strings"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "[warn]" in line]
    assert warnings == []  # an undocumented parameter, a @param naming none
    fresh = (copy / "REFERENCE.md").read_text()
    assert (MODULE / "REFERENCE.md").read_text() == fresh, (
        "REFERENCE.md is stale: run `puppet strings generate --format markdown` in puppet/trigger")


# The platforms something here runs the module on: CI and the local lab run
# on this machine's Debian 12, the Vagrant lab boots Debian 12 boxes. A
# platform goes into metadata.json when a test runs there, not before.
TESTED_PLATFORMS = {("Debian", "12")}


def test_supported_platforms_are_the_ones_the_tests_run_on():
    metadata = json.loads((MODULE / "metadata.json").read_text())
    listed = {(entry["operatingsystem"], release) for entry in metadata["operatingsystem_support"]
              for release in entry["operatingsystemrelease"]}
    assert listed == TESTED_PLATFORMS
    release = dict(line.split("=", 1) for line in open("/etc/os-release").read().splitlines() if "=" in line)
    here = (release.get("NAME", "").strip('"').split()[0], release.get("VERSION_ID", "").strip('"'))
    if IN_CI:
        assert here in listed, f"CI runs on {here}, which metadata.json does not list"


def module_metadata(*args: str) -> subprocess.CompletedProcess:
    from tests.integration.puppet.puppet_apply import REPO

    return subprocess.run([sys.executable, str(REPO / "scripts" / "module-metadata"), *args],
                          capture_output=True, text=True, check=False, timeout=120)


def test_the_site_fills_the_metadata_template_with_its_urls_and_it_passes_the_linter(tmp_path):
    need("metadata-json-lint", "metadata-json-lint")
    # The template names no real place yet: publishing it as it is would be refused.
    check = module_metadata("--check")
    assert check.returncode == 1 and "source is still a placeholder" in check.stderr
    out = tmp_path / "metadata.json"
    done = module_metadata("--source", "https://git.example.org/ops/trigger", "--out", str(out))
    assert done.returncode == 0, done.stderr
    filled = json.loads(out.read_text())
    assert (filled["source"], filled["project_page"], filled["issues_url"]) == (
        "https://git.example.org/ops/trigger", "https://git.example.org/ops/trigger",
        "https://git.example.org/ops/trigger/issues")
    template = json.loads((MODULE / "metadata.json").read_text())
    assert {k: v for k, v in filled.items() if k not in ("source", "project_page", "issues_url")} == {
        k: v for k, v in template.items() if k not in ("source", "project_page", "issues_url")}
    assert metadata_lint(out).returncode == 0
    bad = module_metadata("--source", "http://git.example.org/x", "--out", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "https URL" in bad.stderr and not (tmp_path / "bad.json").exists()


def test_the_changelog_has_the_first_release_of_the_version_in_metadata():
    metadata = json.loads((MODULE / "metadata.json").read_text())
    changelog = (MODULE / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (?:Release )?(\d+\.\d+\.\d+)\b(.*)$", changelog, re.MULTILINE)
    assert releases and releases[0][0] == metadata["version"], releases
    assert "unreleased" not in releases[0][1].lower()
