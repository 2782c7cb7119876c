"""The flasher's reading of what a board answers, fuzzed: whatever bytes come back over the
serial link (an old agent, other firmware, line noise), the flasher either understands them or
raises a FlashError naming the answer - never another exception, which the CLI would show as a
traceback (issue 15)."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.controller.errors import ConfigError, FlashError
from edgefleet.controller.install import flasher
from edgefleet.controller.install.serialrepl import ReplExecError

ANSWERS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                     st.sampled_from(["mpy", "deflate", "free", "uid", "node", "broker", "host", "port", "x"]),
                     inner, max_size=5), max_leaves=12).map(lambda v: __import__("json").dumps(v).encode()),
)


class ScriptedLink:
    """A serial link whose board answers every exec with the next scripted reply (bytes, or a
    ReplExecError carrying the given stderr)."""

    port = "socket://fuzz"
    raw_paste = True

    def __init__(self, replies):
        self.replies = list(replies)

    def exec(self, code, timeout=None, path=None):
        reply = self.replies.pop(0) if self.replies else b""
        if isinstance(reply, str):
            raise ReplExecError("board raised", self.port, path, stderr=reply)
        return reply


def _only_flash_errors(call):
    try:
        return call()
    except FlashError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS)
def test_any_probe_answer_is_understood_or_a_flash_error(answer):
    info = _only_flash_errors(lambda: flasher.BoardAgent(ScriptedLink([answer])).probe())
    if info is not None:
        assert set(info) == set(flasher.BOARD_INFO)
        _only_flash_errors(lambda: flasher.check_compatible(info, [], "socket://fuzz"))
        if info["broker"] is not None:
            try:
                flasher._broker_from_board(info, "socket://fuzz")
            except ConfigError as e:   # a config.json without a usable broker: named, with the fix
                assert "pass --broker" in str(e)


@settings(max_examples=200, deadline=None)
@given(ANSWERS)
def test_any_listing_is_understood_or_a_flash_error(answer):
    board = _only_flash_errors(lambda: flasher.BoardAgent(ScriptedLink([answer])).listing([], []))
    assert board is None or all(len(digest) == 64 for digest in board.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(ANSWERS, st.text(max_size=120)), min_size=1, max_size=3))
def test_any_answer_while_writing_a_file_is_understood_or_a_flash_error(replies):
    agent = flasher.BoardAgent(ScriptedLink(replies))
    _only_flash_errors(lambda: agent.write_file("firmware/x.py", b"x" * 5000, "0" * 64, flasher.Progress()))


@pytest.mark.parametrize("answer,why", [
    (b"[1, 2]", "unexpected answer"), (b'{"mpy": "six"}', "mpy='six', expected int"),
    (b'{"broker": "h:1"}', "broker='h:1', expected dict"), (b"Traceback ...", "unexpected answer"),
])
def test_odd_probe_answers_name_what_was_wrong(answer, why):
    with pytest.raises(FlashError, match=why):
        flasher.BoardAgent(ScriptedLink([answer])).probe()


def test_a_write_that_fails_without_a_message_is_still_a_flash_error():
    agent = flasher.BoardAgent(ScriptedLink([""]))
    with pytest.raises(FlashError, match="printed no error"):
        agent.write_file("firmware/x.py", b"x", "0" * 64, flasher.Progress())
