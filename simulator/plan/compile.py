"""Catalogs compiled from a manifest and fact files with Debian's Puppet, no server.

All nodes compile in one Ruby process (compile.rb): Puppet's start-up, about
2 s, is paid once instead of per node as with `puppet catalog compile`.
The pitfalls of doing this by hand are closed here rather than documented:
facts come only from the facts directory (never this machine's), a facts
file with no facts is an error for its node (it would match `node default`
and compile to a near-empty catalog), YAML timestamps in fact files become
strings, and Puppet's log lines go to stderr, apart from the JSON. Puppet
runs with a confdir, vardir and codedir of its own, so no puppet.conf of
this machine takes part.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

RUBY_SCRIPT = Path(__file__).with_name("compile.rb")


class CompileError(RuntimeError):
    """Puppet could not run at all (not one node's failure); one line."""


@dataclass(frozen=True)
class CompileOptions:
    manifest: Path | None
    facts: Path
    modulepath: str | None = None
    hiera_config: Path | None = None
    environment_path: Path | None = None
    environment: str = "production"


def _plain(value):
    """Fact values as JSON can carry them: YAML's dates and timestamps become ISO strings."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_facts(directory: Path) -> tuple[list[dict], list[str]]:
    """[{name, facts}] from NODE.json / NODE.yaml files, and one error line per bad file.

    A file is `puppet facts find`'s `{"name", "values"}` or a flat mapping of
    facts (`facter -j`); the node is `name`, else the file's stem.
    """
    nodes, errors = [], []
    if not directory.is_dir():
        raise CompileError(f"--facts {directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".json", ".yaml", ".yml"))
    if not files:
        raise CompileError(f"--facts {directory}: no NODE.json or NODE.yaml fact files")
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            errors.append(f"{path}: cannot read facts: {str(exc).splitlines()[0]}")
            continue
        if isinstance(data, dict) and isinstance(data.get("values"), dict):
            name, facts = str(data.get("name") or path.stem), data["values"]
        elif isinstance(data, dict):
            name, facts = path.stem, data
        else:
            errors.append(f"{path}: facts must be a mapping")
            continue
        if not facts:
            errors.append(f"{path}: {name} has no facts: it would compile as `node default`; skipped")
            continue
        nodes.append({"name": name, "facts": _plain(facts)})
    return nodes, errors


def puppet_settings(options: CompileOptions, workdir: Path) -> list[str]:
    settings = ["--confdir", str(workdir / "conf"), "--vardir", str(workdir / "var"),
                "--codedir", str(workdir / "code"), "--log_level", "warning",
                "--facts_terminus", "memory"]
    if options.environment_path:
        settings += ["--environmentpath", str(options.environment_path.resolve()),
                     "--environment", options.environment]
    else:
        settings += ["--manifest", str(options.manifest.resolve())]
        if options.modulepath:
            settings += ["--modulepath", ":".join(str(Path(p).resolve())
                                                  for p in options.modulepath.split(":") if p)]
    if options.hiera_config:
        settings += ["--hiera_config", str(options.hiera_config.resolve())]
    return settings


def compile_catalogs(options: CompileOptions) -> Iterator[tuple[str, dict | str]]:
    """(node, Puppet catalog JSON) or (node, error line) per node, in one Puppet process."""
    for label, path in (("--manifest", options.manifest), ("--hiera-config", options.hiera_config),
                        ("--environment-path", options.environment_path)):
        if path is not None and not path.exists():
            raise CompileError(f"{label} {path}: no such file or directory")
    ruby = shutil.which("ruby")
    if ruby is None or shutil.which("puppet") is None:
        raise CompileError("compiling needs Puppet (Debian: apt-get install puppet)")
    nodes, errors = read_facts(options.facts)
    for line in errors:
        yield line.split(":", 1)[0], line
    if not nodes:
        return
    with tempfile.TemporaryDirectory(prefix="trigger-plan-") as workdir:
        request = {"settings": puppet_settings(options, Path(workdir)),
                   "environment": options.environment if options.environment_path else None,
                   "nodes": nodes}
        # Puppet's log lines (warnings of the compile) go to a file, shown on failure only.
        with open(Path(workdir) / "puppet.log", "w+") as log:
            proc = subprocess.Popen([ruby, str(RUBY_SCRIPT)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, text=True,
                                    env={**os.environ, "LANG": "C.UTF-8"}, cwd=workdir)
            try:
                proc.stdin.write(json.dumps(request))
                proc.stdin.close()
                for line in proc.stdout:
                    answer = json.loads(line)
                    if answer["node"] is None:
                        raise CompileError(answer["error"])
                    yield answer["node"], answer.get("catalog") or f"{answer['node']}: {answer['error']}"
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                proc.stdout.close()
            if proc.returncode not in (0, 3, -9):
                log.seek(0)
                tail = log.read().strip().splitlines()[-1:] or ["no output"]
                raise CompileError(f"puppet exited with {proc.returncode}: {tail[0]}")
