"""The spool on its own: order, cursor across restarts, a torn last line, one owner per directory."""

from __future__ import annotations

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
