"""The command line's own checks, in process, on the in-memory store."""

import pytest

from trigger.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_hosts_and_hosts_file_count(tmp_path, capsys):
    f = tmp_path / "hosts"
    f.write_text("# load balancers\nlb1.example.com\n\nlb2.example.com,lb3.example.com\n")
    code, out, err = run(capsys, "fire", "t", "--hosts", "a.example.com", "--hosts-file", str(f),
                         "--hosts", "b.example.com", "--store", "memory", "--provider", "dummy")
    assert code == 0, err
    assert "a.example.com, b.example.com, lb1.example.com, lb2.example.com, lb3.example.com" in out


def test_hosts_from_standard_input(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("x1\nx2\n"))
    code, out, _ = run(capsys, "fire", "t", "--hosts-file", "-", "--store", "memory")
    assert code == 0 and len(out.strip()) > 10  # the event id


@pytest.mark.parametrize("argv, message", [
    (["fire", "t", "--store", "memory"], "give the hosts with --hosts or --hosts-file"),
    (["fire", "t", "--hosts-file", "/no/such/file", "--store", "memory"], "cannot read --hosts-file"),
    (["fire", "t", "--hosts", "a b", "--store", "memory"], "bad host name 'a b'"),
    (["fire", "t", "--hosts", "a", "--ttl", "0", "--store", "memory"], "ttl must be an integer"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_missing_task_spooler_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run(capsys, "watch", "--host", "h", "--queue", "tsp", "--store", "memory")
    assert code == 2 and err.count("\n") == 1
    assert "tsp not found: install the Debian package task-spooler" in err
