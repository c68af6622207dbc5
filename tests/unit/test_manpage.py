"""`trigger manpage`: trigger(1) made from the parser, rendered by groff."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import need
from trigger.cli import COMMANDS, build_parser
from trigger.commands.manpage import page, roff


def rendered() -> str:
    groff = need("groff", "groff-base")
    source = subprocess.run([sys.executable, "-m", "trigger", "manpage"], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    done = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-P", "-cbou"], input=source,
                          capture_output=True, text=True, check=False, timeout=60,
                          env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stderr == "", done.stderr  # -ww: any roff warning shows
    return done.stdout


def test_the_page_has_every_command_and_every_option_with_its_default():
    text = rendered()
    assert "Puppet-native cross-node orchestration over etcd" in text
    for name in COMMANDS:
        assert f"trigger {name}" in text, name
    parser = build_parser()
    (commands,) = [a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if action.help == "==SUPPRESS==":  # hidden from --help too (--store, for tests)
                assert not any(option in text for option in action.option_strings)
                continue
            for option in action.option_strings:
                assert option in text, (name, option)
    assert "(default: 5)" in text  # fire --ttl, as --help shows it
    for code in ("EXIT STATUS", "75", "130", "ETCDCTL_ENDPOINTS"):
        assert code in text


def test_roff_escapes_what_roff_would_read_as_requests():
    assert roff(".hidden\n'quote\nplain-text \\n") == "\\&.hidden\n\\&'quote\nplain\\-text \\en"
    assert page(build_parser(["fire"]), "1.2.3").startswith('.TH TRIGGER 1 "" "trigger 1.2.3"')
