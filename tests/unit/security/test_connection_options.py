"""TLS and credential options: from the command line and etcdctl's
environment names, checked before any connection, passed on by the watcher
to `trigger run` without a password on a command line."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import need
from trigger import cli
from trigger.commands import common
from trigger.store.etcd import EtcdStore, load_tls



@pytest.fixture(autouse=True)
def no_etcdctl_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("ETCDCTL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    """A self-signed certificate and its key, and a key of another pair."""
    need("openssl", "openssl")
    tmp = tmp_path_factory.mktemp("pem")
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1",
                        "-subj", f"/CN={name}"], cwd=tmp, check=True, capture_output=True)
    return tmp


def args(*argv):
    return cli.build_parser().parse_args(["status", *argv])


def test_options_come_first_then_etcdctl_environment(monkeypatch, pem):
    monkeypatch.setenv("ETCDCTL_CACERT", str(pem / "a.crt"))
    monkeypatch.setenv("ETCDCTL_CERT", "/env/cert")
    monkeypatch.setenv("ETCDCTL_KEY", "/env/key")
    monkeypatch.setenv("ETCDCTL_USER", "envuser:envpw")
    got = common.connection(args("--cert", "/opt/cert", "--user", "node1:pw"))
    assert got == {"cacert": str(pem / "a.crt"), "cert": "/opt/cert", "key": "/env/key",
                   "user": "node1", "password": "pw"}
    assert common.connection(args())["user"] == "envuser"


def test_passwords_come_from_the_user_a_file_or_the_environment(monkeypatch, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret:with:colons\n")
    assert common.credentials(args("--user", "n1", "--password-file", str(secret))) == ("n1", "s3cret:with:colons")
    monkeypatch.setenv("ETCDCTL_PASSWORD", "fromenv")
    assert common.credentials(args("--user", "n1")) == ("n1", "fromenv")
    assert common.credentials(args()) == (None, None)


@pytest.mark.parametrize("argv, words", [
    (["--user", "n1"], "no password for etcd user 'n1'"),
    (["--user", ":pw"], "--user needs a name"),
    (["--password-file", "/x"], "--password-file needs --user"),
    (["--user", "n1", "--password-file", "/nonexistent"], "cannot read --password-file"),
    (["--cert", "/x"], "--cert and --key go together"),
    (["--cacert", "/nonexistent/ca.pem"], "cannot read --cacert"),
    (["--cacert", "/dev/null"], "not a PEM CA certificate"),
])
def test_bad_connection_options_are_bad_input(argv, words, capsys):
    assert cli.main(["status", "--endpoints", "https://127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_a_key_that_does_not_match_its_certificate_is_refused(pem):
    with pytest.raises(ValueError, match="key values mismatch"):
        load_tls(str(pem / "a.crt"), str(pem / "a.crt"), str(pem / "b.key"))
    assert load_tls(str(pem / "a.crt"), str(pem / "a.crt"), str(pem / "a.key")).cert.startswith(b"-----BEGIN")


def test_tls_options_with_a_plain_http_endpoint_are_refused(pem):
    """No silent downgrade: TLS files given means TLS is wanted."""
    with pytest.raises(ValueError, match="plain http"):
        EtcdStore(["https://127.0.0.1:1", "http://127.0.0.1:2"], cacert=str(pem / "a.crt"))
    EtcdStore(["https://127.0.0.1:1"], cacert=str(pem / "a.crt")).close()


def test_the_watcher_passes_tls_and_user_on_but_never_a_password(monkeypatch, pem, tmp_path):
    monkeypatch.chdir(pem)
    got = common.pass_on(cli.build_parser().parse_args(
        ["watch", "--host", "h", "--cacert", "a.crt", "--cert", "a.crt", "--key", "a.key",
         "--user", "node1:s3cret"]))
    assert got == ["--cacert", str(pem / "a.crt"), "--cert", str(pem / "a.crt"), "--key", str(pem / "a.key"),
                   "--user", "node1"]
    assert os.environ["ETCDCTL_PASSWORD"] == "s3cret"  # what the queue hands to the run
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    got = common.pass_on(cli.build_parser().parse_args(
        ["watch", "--host", "h", "--user", "node1", "--password-file", str(secret)]))
    assert got == ["--user", "node1", "--password-file", str(secret)]


def test_a_run_started_by_the_watcher_reads_those_options():
    parsed = cli.build_parser().parse_args(
        ["run", "--host", "h", "--run-id", "r1", "--cacert", "/c", "--user", "n1", "--password-file", "/p",
         "--", "puppet", "agent", "--test"])
    assert (parsed.cacert, parsed.user, parsed.password_file) == ("/c", "n1", "/p")
    assert parsed.command[-3:] == ["puppet", "agent", "--test"]


def test_a_password_or_a_key_never_shows_in_a_repr(pem):
    from trigger.store.etcd_common import Credentials

    tls = load_tls(str(pem / "a.crt"), str(pem / "a.crt"), str(pem / "a.key"))
    key = (pem / "a.key").read_bytes()
    assert tls.key == key and key.decode() not in repr(tls) and "cacert=" in repr(tls)
    assert repr(Credentials("root", "s3cret")) == "Credentials(user='root')"
