# What a node keeps on flash about its resets and crashes, and the commands that act on them,
# under CPython and MicroPython: reset causes, quick boots and safe mode, crash records.
import os

from firmware import bootguard, commands, crashlog, flashfile
from unit import Skip

_count = [0]


def _fresh_dir():
    _count[0] += 1
    path = "/tmp/edgefleet-records-%d-%d" % (os.getpid() if hasattr(os, "getpid") else 0, _count[0])
    flashfile.ensure_dir(path)
    for name in os.listdir(path):
        os.remove(path + "/" + name)
    return path


def test_reset_causes_come_from_the_record_then_the_hal_then_power():
    d = _fresh_dir()
    assert bootguard.on_boot(d, 1, None, 3)["reset"] == "first"
    bootguard.write(d, 1, 0, False, "watchdog", "critical child delivery silent for 12000 ms")
    info = bootguard.on_boot(d, 2, "hard_reset", 3)
    assert info["reset"] == "watchdog" and "delivery" in info["reset_detail"], info
    # Nothing recorded: the board's own register, if it has one, else a power cut.
    assert bootguard.on_boot(d, 3, "watchdog", 3)["reset"] == "watchdog"
    info = bootguard.on_boot(d, 4, None, 3)
    assert info["reset"] == "power" and info["reset_detail"] is None, info


def test_a_damaged_or_lost_boot_counter_restarts_above_every_boot_on_flash():
    # Otherwise new results repeat (node, boot, seq) of old ones: the controller would take them
    # for duplicates, ack them and drop them.
    from firmware.outbox import Outbox
    d = _fresh_dir()
    for boot in range(1, 7):
        assert bootguard.next_boot(d) == boot
    bootguard.write(d, 6, 0, False)
    crashlog.add(d, 5, 100, "w", "crash", "RuntimeError", False)
    box_dir = d + "-outbox"
    flashfile.ensure_dir(box_dir)
    for name in os.listdir(box_dir):
        os.remove(box_dir + "/" + name)
    box = Outbox(box_dir)
    box.append("result", 9, 4, b'{"r": 1}')   # results of boot 9 wait on flash
    box.flush()
    with open(d + "/boot.json", "w") as f:
        f.write('{"bo')                       # torn by a power cut
    recovered = Outbox(box_dir).recover()
    assert recovered == {9: 4}, recovered
    assert crashlog.highest_boot(d, recovered, flashfile.read(d + bootguard.FILE)) == 9
    assert bootguard.next_boot(d, crashlog.highest_boot(d, recovered, flashfile.read(d + bootguard.FILE))) == 10
    os.remove(d + "/boot.json")               # lost: the boot and crash records still count
    assert bootguard.next_boot(d, crashlog.highest_boot(d, {}, flashfile.read(d + bootguard.FILE))) == 7
    with open(d + "/boot.json", "w") as f:
        f.write('[3]')                        # valid JSON, wrong shape
    assert bootguard.next_boot(d, crashlog.highest_boot(d, {}, flashfile.read(d + bootguard.FILE))) == 7
    assert flashfile.read(d + "/boot.json") == {"boot": 7}


def test_three_quick_boots_ended_by_faults_mean_safe_mode_and_a_stable_boot_clears_them():
    d = _fresh_dir()
    seen = [bootguard.on_boot(d, 1, None, 3)]
    for boot, cause in ((2, "crash"), (3, "watchdog"), (4, "soft")):
        bootguard.write(d, boot - 1, seen[-1]["quick_boots"], False, cause if cause != "soft" else None)
        seen.append(bootguard.on_boot(d, boot, "soft", 3))
    assert [i["quick_boots"] for i in seen] == [0, 1, 2, 3], seen
    assert [i["safe_mode"] for i in seen] == [False, False, False, True]
    bootguard.write(d, 4, 3, True)   # this boot ran long enough
    info = bootguard.on_boot(d, 5, None, 3)
    assert info["quick_boots"] == 0 and not info["safe_mode"], info


def test_power_cuts_resets_and_reboots_neither_count_nor_clear_quick_boots():
    d = _fresh_dir()
    bootguard.on_boot(d, 1, None, 3)
    bootguard.write(d, 1, 0, False, "crash")
    assert bootguard.on_boot(d, 2, None, 3)["quick_boots"] == 1
    for boot in range(3, 20):   # a board browning out again and again keeps running its workloads
        info = bootguard.on_boot(d, boot, "hard_reset" if boot % 2 else None, 3)
        assert info["quick_boots"] == 1 and not info["safe_mode"], info
    bootguard.write(d, 19, 1, False, "reboot")
    assert bootguard.on_boot(d, 20, None, 3)["quick_boots"] == 1
    bootguard.write(d, 20, 1, False, "crash")
    assert bootguard.on_boot(d, 21, None, 3)["quick_boots"] == 2


async def test_reboots_the_node_asks_for_are_recorded_so_updates_in_a_row_never_mean_safe_mode():
    try:
        from firmware.node import Node   # its reboot path, on a stand-in node
    except MemoryError:
        raise Skip("the whole node module does not load beside the tests at this heap")

    class Hal:
        reboots = 0

        def reboot(self):
            self.reboots += 1

    class Rebooting:
        write_boot_record = Node.write_boot_record
        reboot_soon = Node.reboot_soon

    node = Rebooting()
    node.data_dir, node.hal, node.stable = _fresh_dir(), Hal(), False
    # Four updates within a minute: each switches slots and reboots from a boot not yet stable.
    # The board reports its reset as "soft", as MCU ports do for a panic as well.
    for boot in range(1, 6):
        node.boot = boot
        node.reset_info = bootguard.on_boot(node.data_dir, boot, "soft" if boot > 1 else None, 3)
        assert node.reset_info["quick_boots"] == 0 and not node.reset_info["safe_mode"], node.reset_info
        assert node.reset_info["reset"] == ("reboot" if boot > 1 else "first")
        await node.reboot_soon("update: slot switched (b%d)" % boot)
        assert node.hal.reboots == boot
    assert flashfile.read(node.data_dir + bootguard.FILE)["detail"] == "update: slot switched (b5)"


def test_crash_records_keep_the_last_few_and_are_sent_once():
    d = _fresh_dir()
    for i in range(crashlog.KEEP + 3):
        crashlog.add(d, 1, 1000 + i, "w", "crash", "RuntimeError: %d %s" % (i, "x" * 300), False)
    records = crashlog.read(d)
    assert len(records) == crashlog.KEEP and records[-1]["up"] == 1000 + crashlog.KEEP + 2
    assert len(records[0]["err"]) == crashlog.ERROR_CHARS

    class Node:
        data_dir = d
        events = []

        def event(self, level, kind, msg, data=None):
            self.events.append((kind, msg, data))

    node = Node()
    crashlog.publish(node)
    assert len(node.events) == crashlog.KEEP and node.events[0][0] == "crash"
    assert node.events[0][2]["child"] == "w"
    crashlog.publish(node)
    assert len(node.events) == crashlog.KEEP, "records were sent twice"
    assert all(r["sent"] for r in crashlog.read(d))


class _CommandNode:
    """What commands.handle() reads of a node."""

    def __init__(self, allow_faults=False):
        self.cfg = {"allow_faults": allow_faults}
        self.workers = {}
        self.safe_mode = False
        self.data_dir = _fresh_dir()
        self.records = []

    def write_boot_record(self, cause=None, detail=None):
        self.records.append((cause, detail))


def test_fault_injection_is_refused_unless_the_config_allows_it():
    reply = commands.handle(_CommandNode(), {"v": 1, "id": "c1", "op": "fault", "args": {"kind": "freeze"}})
    assert not reply["ok"] and "allow_faults" in reply["error"], reply
    node = _CommandNode(allow_faults=True)
    reply = commands.handle(node, {"v": 1, "id": "c2", "op": "fault", "args": {"kind": "melt"}})
    assert not reply["ok"] and "unknown fault 'melt'" in reply["error"], reply
    reply = commands.handle(node, {"v": 1, "id": "c3", "op": "fault", "args": {"kind": "raise", "wl": "nope"}})
    assert not reply["ok"] and "no workload 'nope'" in reply["error"], reply


def test_resume_outside_safe_mode_and_unknown_ops_are_refused_by_name():
    node = _CommandNode()
    reply = commands.handle(node, {"v": 1, "id": "c4", "op": "resume"})
    assert not reply["ok"] and reply["error"] == "not in safe mode" and node.records == []
    reply = commands.handle(node, {"v": 1, "id": "c5", "op": "explode"})
    assert not reply["ok"] and "unknown op 'explode'" in reply["error"]
    reply = commands.handle(node, {"v": 1, "id": "c6", "op": "crashes"})
    assert reply["ok"] and reply["data"] == {"records": []}


async def test_watchdog_record_is_cleared_when_the_children_recover_before_it_bites():
    """A link fault once made delivery miss beats: the node stopped feeding the watchdog and
    recorded "watchdog"; delivery recovered before the watchdog bit, the record stayed, and a
    later power cut booted as a watchdog reset (a fault towards safe mode)."""
    try:
        from firmware import node as node_module   # its watchdog loop, on a stand-in node
    except MemoryError:
        raise Skip("the whole node module does not load beside the tests at this heap")
    try:
        await _watchdog_record_cleared(node_module.Node)
    finally:
        from firmware import release_module
        release_module(node_module)   # a smaller board's next test module needs the heap back


async def _watchdog_record_cleared(Node):
    import asyncio

    class Supervisor:
        recovered = False

        def critical_fresh(self):
            return (True, None) if self.recovered else (False, "critical child delivery silent for 12000 ms")

    class Hal:
        feeds = 0

        def watchdog_start(self, timeout_ms):
            return 400

        def watchdog_feed(self):
            self.feeds += 1

    class Outbox:
        def flush(self):
            pass

    class Feeding:
        feed_watchdog = Node.feed_watchdog
        write_boot_record = Node.write_boot_record

        def uptime_ms(self):
            return 0

    node = Feeding()
    node.data_dir, node.hal, node.supervisor, node.outbox = _fresh_dir(), Hal(), Supervisor(), Outbox()
    node.boot, node.stable, node.watchdog_starving = 1, False, None
    node.reset_info = {"quick_boots": 0}
    node.sup_cfg = {"watchdog_ms": 400, "stable_after_ms": 1000000}
    task = asyncio.create_task(node.feed_watchdog())
    await asyncio.sleep(0.35)
    assert flashfile.read(node.data_dir + bootguard.FILE)["cause"] == "watchdog"
    node.supervisor.recovered = True
    await asyncio.sleep(0.35)
    task.cancel()
    record = flashfile.read(node.data_dir + bootguard.FILE)
    assert record["cause"] is None and node.watchdog_starving is None, record
    assert node.hal.feeds > 0
    assert bootguard.on_boot(node.data_dir, 2, None, 3)["reset"] == "power"
