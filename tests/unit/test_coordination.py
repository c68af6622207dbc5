"""Members, roles, slots and elections on the in-memory store with a fake clock."""

import threading

import pytest

from tests.eventually import eventually
from trigger.driver import RealDriver, Slot
from trigger.procedures import Registration, beat, leave
from trigger.coordination import (
    Member,
    leader,
    live_members,
    read_config_dir,
    register,
    resolve_targets,
    split_targets,
    unwatched_hosts,
)
from trigger.layout import Layout
from trigger.records import BadRecord
from trigger.store.memory import MemoryStore

L = Layout()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return MemoryStore(clock=clock)


def join(store, host, roles=(), elections=(), ttl=10):
    lease = store.lease_grant(ttl)
    register(store, L, Member(host, tuple(roles), 0.0, tuple(elections)), lease)
    return lease


def test_split_targets_accepts_roles_and_rejects_bad_names():
    assert split_targets("a,role:lb,a") == ["a", "role:lb"]
    with pytest.raises(BadRecord, match="bad host name"):
        split_targets("role:l b")
    with pytest.raises(BadRecord, match="is empty"):
        split_targets(" ")


def test_roles_resolve_to_live_members_only(store, clock):
    join(store, "lb1", ["lb"])
    join(store, "lb2", ["lb"], ttl=5)
    join(store, "web1", ["web"])
    assert resolve_targets(store, L, ["role:lb", "extra"]) == (["extra", "lb1", "lb2"], [])
    clock.now = 6  # lb2's watcher went silent
    assert resolve_targets(store, L, ["role:lb", "role:db"]) == (["lb1"], ["db"])
    assert [m.host for m in live_members(store, L)] == ["lb1", "web1"]
    assert unwatched_hosts(store, L, ["lb2", "web1", "db1"]) == ["lb2", "db1"]  # order kept


def test_a_member_with_no_roles_is_in_no_role(store):
    join(store, "lb1", ["lb"])
    join(store, "plain1")  # watches its own inbox, declares no role
    assert resolve_targets(store, L, ["role:lb"]) == (["lb1"], [])
    assert resolve_targets(store, L, ["role:db"]) == ([], ["db"])


def test_leader_is_the_oldest_live_candidate(store, clock):
    assert leader(store, L, "db master") is None
    join(store, "db1", elections=["db master"], ttl=5)
    join(store, "db2", elections=["db master"], ttl=10)
    assert leader(store, L, "db master") == "db1"
    clock.now = 6
    assert leader(store, L, "db master") == "db2"


def test_membership_reregisters_after_its_lease_ran_out(store, clock, tmp_path):
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "loadbalancer").touch()
    reg = Registration(L, "lb1", roles=("edge",), config_dir=str(tmp_path), ttl=3)
    driver = RealDriver(store, clock=clock)
    driver.run(beat(reg))
    assert live_members(store, L)[0].roles == ("edge", "loadbalancer")
    clock.now = 10  # etcd was unreachable longer than the lease
    assert live_members(store, L) == []
    driver.run(beat(reg))  # the refresh fails: lease gone
    driver.run(beat(reg))  # a new lease, registered again
    assert [x.host for x in live_members(store, L)] == ["lb1"]


def test_membership_follows_the_config_dir(store, clock, tmp_path):
    (tmp_path / "elections").mkdir()
    reg = Registration(L, "db1", config_dir=str(tmp_path), ttl=30)
    driver = RealDriver(store, clock=clock)
    driver.run(beat(reg))
    assert leader(store, L, "primary") is None
    (tmp_path / "elections" / "primary").touch()
    driver.run(beat(reg))
    assert leader(store, L, "primary") == "db1"
    (tmp_path / "elections" / "primary").unlink()
    driver.run(beat(reg))
    assert leader(store, L, "primary") is None
    driver.run(leave(reg))
    assert live_members(store, L) == []


def test_read_config_dir_without_dir():
    assert read_config_dir(None) == ((), ())


def test_read_config_dir_skips_a_bad_role_name(tmp_path, caplog):
    (tmp_path / "roles").mkdir()
    for name in ("lb", "bad name", ".hidden"):
        (tmp_path / "roles" / name).touch()
    assert read_config_dir(str(tmp_path)) == (("lb",), ())
    assert "ignoring" in caplog.text and "bad name" in caplog.text


def test_slots_admit_limit_holders_and_the_next_when_one_leaves(store):
    a, b, c = (Slot(store, L, "refresh lbs", 2, h) for h in ("a", "b", "c"))
    a.acquire(timeout=1)
    b.acquire(timeout=1)
    with pytest.raises(TimeoutError, match="no slot of 2 free"):
        c.acquire(timeout=0.2)
    got = []
    waiter = threading.Thread(target=lambda: got.append(c.acquire(timeout=5)))
    waiter.start()
    a.release()
    waiter.join(5)
    assert got and not waiter.is_alive()
    for s in (b, c):
        s.release()
    assert store.get_prefix(L.slots_prefix("refresh%20lbs"))[0] == []


def test_a_crashed_slot_holder_frees_its_slot_when_its_lease_ends(store, clock):
    holder = Slot(store, L, "t", 1, "a", ttl=5)
    holder.acquire(timeout=1)
    holder.abandon()  # the holder's process died: nobody refreshes
    clock.now = 6
    Slot(store, L, "t", 1, "b").acquire(timeout=1)


def test_a_waiter_whose_lease_ended_stops_waiting(store, clock):
    """A slot waits on its run's lease: once that ended, the run has lost its
    host's run lock too, so it must not go on; its fires wait for the next run."""
    holder = Slot(store, L, "t", 1, "a", ttl=2)
    holder.acquire(timeout=1)
    waiter = Slot(store, L, "t", 1, "b", ttl=2)
    errors, got = [], []

    def wait():
        try:
            got.append(waiter.acquire(timeout=10))
        except Exception as exc:  # noqa: BLE001 (the test reports any)
            errors.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    eventually(lambda: store.get(waiter.key), 5, "the waiter to queue up")
    holder.abandon()  # the holder is gone; nobody refreshes its lease
    clock.now += 100  # and the waiter could not refresh either (etcd unreachable)
    store.expire_leases()
    thread.join(5)
    assert got == [] and [type(e).__name__ for e in errors] == ["SlotLost"]
    assert store.get(waiter.key) is None
