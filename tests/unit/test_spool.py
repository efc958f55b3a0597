import pytest

from ingest.spool import Spool, SpoolFull


def test_entries_survive_a_new_process_and_drain_oldest_first(tmp_path):
    spool = Spool(tmp_path, 10_000)
    spool.append([("events", b"\x01", b'{"n": 1}')])
    spool.append([("dead", None, b'{"n": 2}'), ("events", b"\x02", b'{"n": 3}')])
    reopened = Spool(tmp_path, 10_000)  # as after a crash
    assert reopened.depth() == 2 and reopened.bytes == spool.bytes
    entries = reopened.oldest(10)
    assert [entry.messages for entry in entries] == [
        [("events", b"\x01", b'{"n": 1}')], [("dead", None, b'{"n": 2}'), ("events", b"\x02", b'{"n": 3}')]]
    reopened.remove(entries[:1])
    assert [entry.messages for entry in Spool(tmp_path, 10_000).oldest(10)] == [entries[1].messages]


def test_a_full_spool_refuses_and_frees_space_when_drained(tmp_path):
    spool = Spool(tmp_path, 60)
    spool.append([("events", None, b"x" * 20)])
    with pytest.raises(SpoolFull):
        spool.append([("events", None, b"y" * 20)])
    assert spool.depth() == 1
    spool.remove(spool.oldest(1))
    assert (spool.depth(), spool.bytes) == (0, 0)
    spool.append([("events", None, b"y" * 20)])


def test_half_written_entries_are_discarded(tmp_path):
    (tmp_path / "00000000000000000001-abcd.tmp").write_bytes(b"[[")
    spool = Spool(tmp_path, 1000)
    assert spool.depth() == 0
    assert not list(tmp_path.glob("*.tmp"))
