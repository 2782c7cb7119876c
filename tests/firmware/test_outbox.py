# The flash outbox, under CPython and MicroPython: order, acknowledgement and trimming, recovery
# after a reboot, torn and corrupt records, the capacity policy.
import os

from firmware.outbox import HEADER_SIZE, Outbox

_count = [0]


def _fresh_dir():
    _count[0] += 1
    path = "/tmp/edgefleet-outbox-%d-%d" % (os.getpid() if hasattr(os, "getpid") else 0, _count[0])
    try:
        for name in os.listdir(path):
            os.remove(path + "/" + name)
    except OSError:
        pass
    return path


def _payload(boot, seq):
    return ('{"boot": %d, "seq": %d, "pad": "%s"}' % (boot, seq, "x" * 40)).encode()


def _fill(box, boot, first, last):
    for seq in range(first, last + 1):
        box.append("result", boot, seq, _payload(boot, seq))
    box.flush()


def _drain(box, limit=1000):
    out = []
    while True:
        batch = box.next_batch(7)
        if not batch:
            return out
        out.extend((b, s) for _, b, s, _ in batch)
        if len(out) > limit:
            raise AssertionError("outbox never ran dry")


def test_records_come_back_in_order_and_acks_trim_whole_segments():
    box = Outbox(_fresh_dir(), capacity_bytes=8000, segment_bytes=600, flush_records=4)
    box.recover()
    _fill(box, 1, 1, 30)
    assert _drain(box) == [(1, s) for s in range(1, 31)]
    assert box.records == 30 and len(box.segments) > 3
    segments = len(box.segments)
    box.ack(1, 20)
    assert len(box.segments) < segments and box.records >= 10
    box.rewind()
    assert _drain(box) == [(1, s) for s in range(21, 31)]
    box.ack(1, 30)
    assert len(box.segments) == 1 and box.stats()["dropped"] == 0


def test_new_records_flow_while_a_replay_is_under_way():
    box = Outbox(_fresh_dir(), segment_bytes=500)
    box.recover()
    _fill(box, 1, 1, 10)
    first = box.next_batch(5)
    _fill(box, 1, 11, 12)
    rest = _drain(box)
    assert [s for _, _, s, _ in first] + [s for _, s in rest] == list(range(1, 13))


def test_a_reboot_recovers_every_unacknowledged_record():
    path = _fresh_dir()
    box = Outbox(path, segment_bytes=700)
    box.recover()
    _fill(box, 1, 1, 25)
    box.ack(1, 5)
    box.append("result", 1, 26, _payload(1, 26))  # buffered, never flushed: not yet accepted
    again = Outbox(path, segment_bytes=700)
    last = again.recover()
    assert last == {1: 25}
    got = _drain(again)
    # Trimmed segments are gone; what remains from 1..25 is replayed (the controller dedups).
    assert got[-1] == (1, 25) and got == [(1, s) for s in range(got[0][1], 26)]
    assert got[0][1] <= 6


def test_a_torn_tail_and_a_corrupt_byte_cost_only_their_records():
    path = _fresh_dir()
    box = Outbox(path, segment_bytes=100000)
    box.recover()
    _fill(box, 3, 1, 10)
    seg = "%s/%08d.seg" % (path, box.segments[-1])
    with open(seg, "rb") as f:
        data = bytearray(f.read())
    record = len(data) // 10
    data[4 * record + HEADER_SIZE + 3] ^= 0xFF          # corrupt record 5's payload
    with open(seg, "wb") as f:
        f.write(data[:len(data) - record // 2])          # and tear record 10 in half
    again = Outbox(path, segment_bytes=100000)
    again.recover()
    assert again.bad_bytes > 0
    assert _drain(again) == [(3, s) for s in (1, 2, 3, 4, 6, 7, 8, 9)]
    _fill(again, 4, 1, 3)  # appending after the torn bytes still works
    assert _drain(again) == [(4, 1), (4, 2), (4, 3)]
    third = Outbox(path, segment_bytes=100000)
    third.recover()
    assert _drain(third)[-3:] == [(4, 1), (4, 2), (4, 3)]


def test_full_flash_drops_the_oldest_segment_and_counts_it():
    box = Outbox(_fresh_dir(), capacity_bytes=1200, segment_bytes=400, flush_records=1)
    box.recover()
    _fill(box, 1, 1, 40)
    stats = box.stats()
    assert stats["dropped"] > 0 and stats["bytes"] <= 1200
    got = _drain(box)
    assert got[-1] == (1, 40)
    assert len(got) + stats["dropped"] == 40


def test_acks_of_other_boots_and_old_acks_change_nothing():
    box = Outbox(_fresh_dir(), segment_bytes=400)
    box.recover()
    _fill(box, 2, 1, 12)
    box.ack(1, 99)
    box.ack(2, 3)
    box.ack(2, 2)
    box.rewind()
    assert _drain(box)[0] == (2, 4)


def test_a_failed_write_keeps_the_records_buffered_and_counts_them_once():
    from firmware.outbox import OutboxError
    failures = [1]

    def flaky_sync(fd):
        if failures:
            failures.pop()
            raise OSError(28, "No space left on device")

    box = Outbox(_fresh_dir(), segment_bytes=100000, flush_records=100, sync=flaky_sync)
    box.recover()
    for seq in range(1, 6):
        box.append("result", 1, seq, _payload(1, seq))
    try:
        box.flush()
        raise AssertionError("the failed write was not reported")
    except OutboxError:
        pass
    assert len(box.buffer) == 5 and box.records == 0
    box.flush()
    assert box.records == 5 and not box.buffer
    # The failed append may have reached the flash before the error: replay then repeats
    # records (the controller stores each once), but nothing is lost or counted twice.
    got = _drain(box)
    assert sorted(set(got)) == [(1, s) for s in range(1, 6)]
