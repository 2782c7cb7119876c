# The `topic` input source (firmware/source_topic.py), under CPython and MicroPython: inputs
# served in sequence order from a bounded buffer, input.start and input.until honoured, a
# killed batch served again, and malformed inputs rejected with a reason.
import binascii

from firmware import protocol
from firmware.errors import ProtocolError
from firmware.source_topic import TopicSource
from firmware.sources import SourceError, open_source
from unit import raises

SIZE = 4


class Model:
    input_size = SIZE
    input_quant = (1.0, 0)


def _input(seq, fill=None, truth=None, size=SIZE):
    data = bytes([(seq if fill is None else fill) & 0xFF] * size)
    msg = {"v": 1, "seq": seq, "data": binascii.b2a_base64(data).decode().strip()}
    if truth is not None:
        msg["truth"] = truth
    return protocol.decode("input", protocol.encode("input", msg))


async def _drain(src, buf=None):
    buf = buf or bytearray(SIZE)
    out = []
    while True:
        got = await src.next_into(buf, 0)
        if got is None:
            return out
        out.append((got[0], buf[0], got[1]))


async def test_inputs_are_served_in_sequence_order_with_their_truth():
    src = open_source({"kind": "topic"}, "/nonexistent", Model())
    assert src.live and src.pos == 0
    for seq in (0, 2, 1, 3):   # one out of order within the buffer
        src.push(_input(seq, truth=seq % 2))
    assert src.waiting() == 4
    got = await _drain(src)
    assert got == [(0, 0, 0), (1, 1, 1), (2, 2, 0), (3, 3, 1)], got
    assert src.pos == 4 and src.seen == 3 and src.dropped == 0 and src.skipped == 0


async def test_duplicates_and_inputs_below_the_position_are_not_served_again():
    src = TopicSource({"kind": "topic", "start": 5}, Model())
    for seq in (3, 4, 5, 5, 6):
        src.push(_input(seq))
    assert [s for s, _, _ in await _drain(src)] == [5, 6]
    src.push(_input(6))     # a QoS 1 redelivery after it was served
    src.push(_input(2))
    assert await _drain(src) == []
    assert src.stale == 5, src.stale   # 3, 4, the second 5, the served 6, 2


async def test_a_gap_is_skipped_and_counted():
    src = TopicSource({"kind": "topic"}, Model())
    for seq in (0, 1, 4):
        src.push(_input(seq))
    assert [s for s, _, _ in await _drain(src)] == [0, 1, 4]
    assert src.skipped == 2 and src.pos == 5


async def test_a_full_buffer_drops_the_oldest_waiting_input():
    src = TopicSource({"kind": "topic", "buffer": 3}, Model())
    for seq in range(6):
        src.push(_input(seq))
    assert src.waiting() == 3 and src.dropped == 3
    assert [s for s, _, _ in await _drain(src)] == [3, 4, 5]
    assert src.report() == {"seen": 5, "dropped": 3}


async def test_until_stops_at_the_hand_over_point():
    src = TopicSource({"kind": "topic", "start": 10}, Model())
    for seq in range(10, 14):
        src.push(_input(seq))
    src.until = 12   # the node retunes the spec: a live migration's hand-over point
    assert src.waiting() == 2
    assert [s for s, _, _ in await _drain(src)] == [10, 11]
    assert src.pos == 12
    src.push(_input(14))     # the next node's: not kept
    assert src.waiting() == 0 and await _drain(src) == []


async def test_until_reached_over_a_gap_ends_the_stream():
    # The last inputs before the hand-over point never came; one past it did: nothing before it
    # is left to wait for, so the worker sees the stream at its end (state "done").
    src = TopicSource({"kind": "topic", "until": 8}, Model())
    src.push(_input(5))
    src.push(_input(9))
    assert [s for s, _, _ in await _drain(src)] == [5]
    assert src.pos == 8


async def test_a_killed_batch_is_served_again():
    # procworker: worker.unfinished holds the position before the batch; a restart sets it back.
    src = TopicSource({"kind": "topic", "buffer": 4}, Model())
    for seq in range(4):
        src.push(_input(seq))
    before = src.pos
    assert len(await _drain(src)) == 4
    for seq in range(4, 7):   # more arrive while the batch is in flight: they do not evict it
        src.push(_input(seq))
    src.pos = before
    src.push(_input(7))   # the batch set back waits in the kept slots, not in the buffer
    assert src.dropped == 0
    assert [s for s, _, _ in await _drain(src)] == list(range(8))
    for seq in range(8, 13):   # past the buffer: the oldest waiting input is dropped, as ever
        src.push(_input(seq))
    assert src.dropped == 1
    assert [s for s, _, _ in await _drain(src)] == list(range(9, 13))


async def test_next_into_waits_for_an_input_or_gives_up():
    import asyncio
    src = TopicSource({"kind": "topic"}, Model())
    buf = bytearray(SIZE)
    assert await src.next_into(buf, 30) is None

    async def later():
        await asyncio.sleep(0.02)
        src.push(_input(7, fill=9))
    asyncio.create_task(later())
    got = await src.next_into(buf, 2000)
    assert got == (7, None) and buf[0] == 9


def test_malformed_inputs_are_rejected_with_a_reason():
    src = TopicSource({"kind": "topic"}, Model())
    e = raises(ProtocolError, src.push, _input(1, size=SIZE + 1))
    assert "5 bytes, the model takes 4" in str(e), e
    e = raises(ProtocolError, src.push, {"v": 1, "seq": 2, "data": "QUJ"})   # bad padding
    assert "base64" in str(e), e
    assert src.rejected == 2 and src.waiting() == 0
    # The schema refuses the rest before the source sees it.
    for bad in ({"v": 1, "seq": -1, "data": ""}, {"v": 1, "seq": "1", "data": ""}, {"v": 1, "seq": 1},
                {"v": 1, "seq": 1, "data": 5}, {"v": 1, "seq": 1, "data": "", "truth": 1.5}):
        raises(ProtocolError, protocol.decode, "input", protocol_json(bad))
    raises(ProtocolError, protocol.decode, "input", "x" * 5000)


def protocol_json(msg):
    import json
    return json.dumps(msg)


def test_bad_specs_and_models_are_refused():
    raises(SourceError, TopicSource, {"kind": "topic", "buffer": 0}, Model())
    raises(SourceError, TopicSource, {"kind": "topic", "buffer": "8"}, Model())

    class Big:
        input_size = protocol.MAX_INPUT_BYTES + 1
    e = raises(SourceError, TopicSource, {"kind": "topic"}, Big())
    assert "at most" in str(e)


def test_the_input_topic_names_the_workload():
    topic = protocol.input_topic("ef", "cam-1")
    assert topic == "ef/wl/cam-1/input"
    assert protocol.parse_topic("ef", topic) == ("cam-1", "input")
    raises(ProtocolError, protocol.parse_topic, "ef", "ef/wl/Bad!/input")
    raises(ProtocolError, protocol.parse_topic, "ef", "ef/wl/cam-1/other")
