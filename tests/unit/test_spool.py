"""The spool on its own: order, cursor across restarts, a torn last line, one owner per directory."""

from __future__ import annotations

import errno

import pytest

from credit_risk.api.prediction_log import Spool, SpoolBusy


def _records(first: int, n: int) -> list[dict]:
    return [{"seq": s, "probability": s / 1000} for s in range(first, first + n)]


def test_spool_reads_back_in_order_and_empties_once_all_is_logged(tmp_path):
    spool = Spool(tmp_path)
    spool.append(_records(1, 3))
    spool.append(_records(4, 4))
    assert spool.pending and spool.backlog == 7
    first, offset = spool.read(5)
    assert [r["seq"] for r in first] == [1, 2, 3, 4, 5]
    spool.commit(offset, len(first))
    rest, offset = spool.read(5)
    assert [r["seq"] for r in rest] == [6, 7]
    spool.commit(offset, len(rest))
    assert not spool.pending and spool.backlog == 0
    assert (tmp_path / "pending.jsonl").stat().st_size == 0
    spool.close()


def test_spool_cursor_survives_a_restart(tmp_path):
    spool = Spool(tmp_path)
    spool.append(_records(1, 10))
    done, offset = spool.read(4)
    spool.commit(offset, len(done))
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.backlog == 6
    assert [r["seq"] for r in reopened.read(100)[0]] == [5, 6, 7, 8, 9, 10]
    reopened.close()


def test_spool_ignores_a_torn_last_line(tmp_path):
    spool = Spool(tmp_path)
    spool.append(_records(1, 2))
    spool.close()
    with open(tmp_path / "pending.jsonl", "ab") as f:
        f.write(b'{"seq": 3, "probab')  # a crash in the middle of a write
    reopened = Spool(tmp_path)
    assert [r["seq"] for r in reopened.read(10)[0]] == [1, 2]
    reopened.close()


def test_spool_refuses_a_second_owner(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(SpoolBusy, match="another API process"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()  # free again once the owner is gone


class _DiskFillsUp:
    """The spool's file on a disk that takes `room` more bytes, in short writes, then ENOSPC."""

    def __init__(self, file, room: int):
        self._file, self._room = file, room

    def write(self, data) -> int:
        if self._room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self._file.write(data[: min(len(data), self._room, 100)])
        self._room -= n
        return n

    def __getattr__(self, name):
        return getattr(self._file, name)


def test_a_failed_append_writes_none_of_its_records_and_later_appends_stay_whole(tmp_path):
    spool = Spool(tmp_path)
    spool.append(_records(1, 3))
    real = spool._file
    spool._file = _DiskFillsUp(real, room=250)  # room for some of the next records, not all
    with pytest.raises(OSError, match="No space"):
        spool.append(_records(4, 20))
    spool._file = real  # space again
    spool.append(_records(24, 2))
    assert spool.backlog == 5
    records, offset = spool.read(100)
    assert [r["seq"] for r in records] == [1, 2, 3, 24, 25]  # no torn fragment glued to 24
    spool.commit(offset, len(records))
    assert not spool.pending
    spool.close()
