"""Wheels for `trigger::install`: the checkout's own wheel and a wheelhouse.

`trigger::install` installs the `trigger` command on a node from a wheel
with `--no-index --find-links WHEELHOUSE`, so a node needs no package index.
The wheelhouse (every dependency, as wheels) is built once per set of
dependencies and Python version and kept; the project's wheel is built
fresh from the checkout each time, so a node runs the code under test.
Building needs the package index; applying does not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The Python a node makes its virtualenv with (trigger::install's default).
NODE_PYTHON = "/usr/bin/python3"  # its pip builds the wheels: Debian python3-pip
WHEELHOUSE_ROOT = Path(os.environ.get("TRIGGER_WHEELHOUSE_DIR", "/var/tmp/trigger-wheelhouse"))


class WheelError(Exception):
    """A wheel could not be built; the message ends with pip's last lines."""


def dependencies() -> list[str]:
    """The project's runtime dependencies, from pyproject.toml."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def _pip_wheel(python: str, args: list[str], what: str) -> None:
    done = subprocess.run([python, "-m", "pip", "wheel", "--disable-pip-version-check",
                           "--no-input", "-q", *args],
                          capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise WheelError(f"pip wheel of {what} exited {done.returncode}:\n{tail}")


def wheelhouse(python: str = NODE_PYTHON) -> Path:
    """A directory of wheels of every dependency, built on first use."""
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256("\n".join([version, *sorted(dependencies())]).encode()).hexdigest()[:16]
    dest = WHEELHOUSE_ROOT / f"py{version}-{key}"
    if dest.is_dir():
        return dest
    WHEELHOUSE_ROOT.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed: a reader never sees half a wheelhouse, and
    # two builders at once just race to the same result.
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=WHEELHOUSE_ROOT))
    try:
        _pip_wheel(python, ["--wheel-dir", str(building), *dependencies()], "the dependencies")
        building.chmod(0o755)
        try:
            building.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return dest


def project_wheel(dest_dir: Path, python: str = NODE_PYTHON) -> Path:
    """The checkout's wheel (without dependencies), built into `dest_dir`."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for old in dest_dir.glob("puppet_trigger-*.whl"):
        old.unlink()
    # A copy of the sources: building in the checkout leaves build/ behind.
    with tempfile.TemporaryDirectory(prefix="trigger-src-") as src:
        shutil.copytree(REPO, src, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".vagrant"))
        _pip_wheel(python, ["--no-deps", "--wheel-dir", str(dest_dir), src], "the checkout")
    (wheel,) = dest_dir.glob("puppet_trigger-*.whl")
    return wheel
