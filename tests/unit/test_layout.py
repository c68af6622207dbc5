"""Where run records live: active ones in the host's prefix, finished ones under done/."""

from trigger.layout import Layout

L = Layout("/p")


def test_run_at_knows_both_places_of_a_run_record():
    assert L.run_at(L.run_key("web1", "r1")) == ("web1", "r1")
    assert L.run_at(L.done_key("web1", "r1")) == ("web1", "r1")
    assert L.done_key("web1", "r1").startswith(L.done_prefix("web1"))
    assert L.done_prefix("web1").startswith(L.done_prefix())


def test_run_at_refuses_everything_else():
    for key in (L.entry_key("web1", "e1"), L.host_prefix("web1") + "runs/", L.done_prefix("web1"),
                L.done_key("web1", "r1") + "/x", "/px/done/web1/r1", "/p/fires/e1", L.member_key("web1")):
        assert L.run_at(key) is None, key
