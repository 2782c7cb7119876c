"""A simulated fleet on this machine: MicroPython boards and Pi-class boards, each booted from
its own board image, all pointed at one broker."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from edgefleet.boards import catalog
from edgefleet.firmware import protocol

from ..install import image, nodelink
from ..netutil import BrokerAddress
from ..errors import BoardError, ConfigError
from .simboard import LinuxBoard, McuBoard, micropython_binary, sim_machine

# The demo's board mix, in the order nodes are added: both runtimes appear from two nodes on.
DEMO_BOARDS = ("rpi-pico-w", "rpi4", "esp32", "rpi-zero-2w")
# WatchdogSec of a simulated Pi-class board's service, as firmware/node.py's default watchdog_ms.
DEFAULT_WATCHDOG_MS = 8000
# Where an MCU board's code runs from (docs/ota.md "Code in ROM"); the first is the default.
CODE_STORES = ("files", "romfs")
# Any MCU board: the simulation layer is the same code on all of them.
LAYER_PROBE_BOARD = "esp32"


def demo_layout(count, tls_only=False):
    """[(node id, board name)] for a demo fleet of `count` nodes; with `tls_only`, only boards
    whose profile can hold TLS beside a model."""
    if count < 1:
        raise ConfigError("a fleet needs at least one node")
    boards = [b for b in DEMO_BOARDS if not tls_only or nodelink.tls_fits(catalog.load(b))[0]]
    layout = []
    per_board = {}
    for i in range(count):
        board = boards[i % len(boards)]
        profile = catalog.load(board)
        per_board[board] = per_board.get(board, 0) + 1
        prefix = "mcu" if profile["runtime"] == "micropython" else "pi"
        layout.append(("%s-%s-%d" % (prefix, board.replace("rpi-", "").replace("-", ""), per_board[board]), board))
    return layout


class SimFleet:
    def __init__(self, root, broker_host, broker_port, layout, keepalive=10, prefix=protocol.DEFAULT_PREFIX, heap_override=None,
                 extra_files=None, config=None, slotted=True, key=None, index_path=None, node_options=None,
                 security=None, tls_port=None, code_store=None):
        self.root = root
        # Where an MCU board's code runs from: "files" (.mpy files in the slot, loaded into the
        # heap) or "romfs" (the slot's ROMFS image, executed in place; docs/ota.md "Code in
        # ROM"); None: each board's profile says ("code_store", default "files").
        if code_store not in (None,) + CODE_STORES:
            raise ConfigError("code store %r is none of %s" % (code_store, ", ".join(CODE_STORES)))
        self.code_store = code_store
        # broker_port: the plaintext listener (None on a broker that has none); tls_port: the
        # TLS listener, used by every board that can hold TLS. With `security` (a
        # FleetSecurity) each board gets its own login, and the fleet CA beside its config.
        self.broker_host, self.broker_port = broker_host, broker_port
        self.security = security
        self.tls_port = tls_port
        self.layout = layout
        self.keepalive = keepalive
        self.prefix = prefix
        self.heap_override = heap_override
        # {path on flash: source file} added to every image, e.g. extra models for tests; a path
        # in a code or model folder (image.FLAT_DIRS) goes into the slot of an A/B image
        self.extra_files = extra_files or {}
        # settings merged into every node's config.json, e.g. {"allow_faults": True}
        self.config = config or {}
        # A/B slot images (docs/ota.md), as `edgefleet flash` and `provision` lay boards out;
        # with a signing key (its private half), the boards hold its public half and take the
        # updates it signs. slotted=False: the flat layout of an edgefleet before slots.
        self.slotted = slotted
        self.key = key
        # Where `edgefleet sim` finds each board's flash (record_board()); None: nowhere.
        self.index_path = index_path
        # {node id: {config key: value}} added to a node's config.json (labels, lease_k, ...)
        self.node_options = node_options or {}
        self.boards = {}
        self.runtimes = {}

    def flash_dir(self, node_id):
        return os.path.join(self.root, node_id, "flash")

    def add(self, node_id, board_name, arch=None):
        """Add a board; arch "arm64" runs a Linux board's node on real aarch64 binaries under
        qemu-user (controller/sim/arm64.py) instead of this machine's Python."""
        profile = catalog.load(board_name)
        cfg = image.node_config(node_id, profile, self.broker_host, self.broker_port, simulated=True,
                                keepalive=self.keepalive, prefix=self.prefix)
        link_files = {}
        if self.security is not None:
            link = nodelink.node_link(node_id, profile, self.node_address(profile), self.keepalive, self.security)
            cfg["broker"], link_files = link.config, link.files
        cfg.update(self.config)
        cfg.update(self.node_options.get(node_id, {}))
        flash = self.flash_dir(node_id)
        if self.slotted:
            image.write_slotted_image(flash, cfg, key=self.key)
        else:
            image.write_image(flash, cfg)
        for name, data in link_files.items():
            with open(os.path.join(flash, name), "wb") as f:
                f.write(data)
        for rel, src in self.extra_files.items():
            in_slot = self.slotted and rel.split("/", 1)[0] in image.FLAT_DIRS
            target = os.path.join(flash, image.FIRST_SLOT, rel) if in_slot else os.path.join(flash, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(src, target)
        log = os.path.join(self.root, node_id, "console.log")
        if profile["runtime"] == "micropython":
            rom = None
            if self.board_code_store(profile) == "romfs":
                rom = put_code_in_rom(flash, profile)
            heap = self.heap_override
            if heap is None:
                # The profile's heap for the node, plus what the simulation layer holds there.
                layer = sim_layer_bytes(flash, rom and rom.image)
                heap = profile["heap_bytes"] + layer
                written = image.read_config(flash)
                written["hal_options"]["sim_layer_bytes"] = layer
                image.write_config(flash, written)
            segments, segment_bytes = 0, 0
            if rom is not None:
                # A board maps its ROM partition from flash; this one copies it onto its heap
                # (controller/sim/mcu_rom): exactly that much more heap, which the node does not count.
                segments, segment_bytes = rom.segments, rom.segment_bytes
                heap += segments * segment_bytes
                written = image.read_config(flash)
                written["hal_options"]["rom_image_bytes"] = segments * segment_bytes
                image.write_config(flash, written)
            board = McuBoard(node_id, flash, heap, console_log=log, machine=sim_machine(profile),
                             rom_segments=segments, rom_segment_bytes=segment_bytes)
            if rom is not None:
                board.program_rom(0, rom.data)
        elif arch == "arm64":
            from .arm64 import ensure_runtime
            runtime = ensure_runtime()
            board = LinuxBoard(node_id, runtime.node_command("config.json"), flash, env=runtime.env(), console_log=log)
        else:
            cmd = [sys.executable, "-m", "edgefleet.boards.linux_main", "config.json"]
            # As the systemd unit a Pi-class board runs under: its WatchdogSec is the node's watchdog.
            watchdog_ms = cfg.get("supervision", {}).get("watchdog_ms", DEFAULT_WATCHDOG_MS)
            board = LinuxBoard(node_id, cmd, flash, console_log=log, watchdog_s=watchdog_ms / 1000)
        self.boards[node_id] = board
        self.runtimes[node_id] = profile["runtime"]
        if self.index_path:
            record_board(self.index_path, node_id, flash)
        return board

    def board_code_store(self, profile):
        store = self.code_store or profile.get("code_store", CODE_STORES[0])
        if store not in CODE_STORES:
            raise ConfigError("board %s: code store %r is none of %s" % (profile["name"], store, ", ".join(CODE_STORES)))
        if store == "romfs" and not self.slotted:
            raise ConfigError("code in ROM needs an A/B slot image (SimFleet(slotted=True))")
        return store

    def node_address(self, profile):
        """TLS where the board can hold it and the broker listens for it, else plaintext."""
        fits, _ = nodelink.tls_fits(profile)
        if self.tls_port and (fits or not self.broker_port):
            return BrokerAddress("mqtts", self.broker_host, self.tls_port)
        return BrokerAddress("mqtt", self.broker_host, self.broker_port)

    def start(self):
        try:
            for entry in self.layout:
                # Each board starts as soon as it is added: the serial port it picked is free
                # now, while the running boards' MQTT links take ephemeral ports that could
                # claim it before a later start (seen at 50 boards).
                self.add(*entry).start()
            for board in self.boards.values():   # boards added before start(); started ones stay as they are
                board.start()
        except Exception:
            self.stop()
            raise
        return self

    def board(self, node_id):
        if node_id not in self.boards:
            raise BoardError("no simulated board %r (boards: %s)" % (node_id, ", ".join(sorted(self.boards))), node_id)
        return self.boards[node_id]

    def set_sim(self, node_id, **settings):
        """Change a board's simulated hardware: load (%), source (mains/battery), battery_pct, time_scale."""
        self.board(node_id)
        write_sim_settings(self.flash_dir(node_id), settings)

    def stop(self):
        for board in self.boards.values():
            try:
                board.stop()
            except Exception:  # keep stopping the others
                pass


_layer_bytes = {}


def sim_layer_bytes(flash_dir=None, rom_image=None):
    """Heap the simulation layer (boards/hal_sim.py, boards/power.py) takes on a MicroPython
    board, measured once per process (boards/sim_layer_probe.py) on the image in `flash_dir`,
    or on a scratch image when there is none yet; with `rom_image` (a board whose code runs
    from ROM), as it loads from that image."""
    micropython = micropython_binary()
    key = (micropython, rom_image is not None)
    if key not in _layer_bytes:
        with tempfile.TemporaryDirectory(prefix="edgefleet-layer-") as scratch:
            code_dir = flash_dir and image_code_dir(flash_dir)
            if code_dir is None:
                profile = catalog.load(LAYER_PROBE_BOARD)
                code_dir = image.write_image(scratch, image.node_config("layer-probe", profile, "127.0.0.1", 1883),
                                             model_names=[])
            _layer_bytes[key] = _measure_layer(micropython, code_dir, rom_image)
    return _layer_bytes[key]


def simulated_heap_bytes(profile):
    """The heap to start a simulated MCU board of `profile` with: the board's own, plus what the
    simulation layer holds there (so the node has what it would have on the real board)."""
    return profile["heap_bytes"] + sim_layer_bytes()


class RomCode:
    """A board's slot code as a ROM image (bytes) for segment 0 of a partition of `segments`
    segments of `segment_bytes` (the profile's "rom"), and a file holding the image for the
    simulation layer's measurement."""

    def __init__(self, data, image_path, segments, segment_bytes):
        self.data = data
        self.image = image_path
        self.segments = segments
        self.segment_bytes = segment_bytes


def put_code_in_rom(flash_dir, profile, slot=image.FIRST_SLOT, mpy_arch=image.SIM_MPY_ARCH):
    """Turn an A/B image's `slot` into one whose code runs from ROM segment 0, as `edgefleet
    flash` leaves a board with a ROM partition (install/romdeploy.py): the slot keeps its models
    and gets its ROM mark, romboot goes beside the boot selector. The image itself goes into the
    board's partition when it is created (McuBoard.program_rom), as a factory programmer would."""
    from ..install import romdeploy
    rom = profile.get("rom") or {}
    segments, segment_bytes = rom.get("segments", 0), rom.get("segment_bytes", 0)
    data = romdeploy.slot_image(os.path.join(flash_dir, slot), segment_bytes or None)
    if segments < 2 or segment_bytes < len(data):
        raise ConfigError("board %s: code in ROM needs two ROM segments of at least %d bytes (profile \"rom\": %r)"
                          % (profile["name"], len(data), rom))
    image_path = flash_dir.rstrip("/") + ".romimg"
    with open(image_path, "wb") as f:
        f.write(data)
    romdeploy.prepare_tree(flash_dir, slot, data, mpy_arch)
    return RomCode(data, image_path, segments, segment_bytes)


def image_code_dir(flash_dir):
    """Where a board image in flash_dir keeps its code (an A/B image: its first slot); None if
    there is no image there."""
    for code_dir in (flash_dir, os.path.join(flash_dir, image.FIRST_SLOT)):
        if os.path.isdir(os.path.join(code_dir, "boards")):
            return code_dir
    return None


def _measure_layer(micropython, code_dir, rom_image=None):
    probe = os.path.join(os.path.dirname(catalog.__file__), "sim_layer_probe.py")
    from .simboard import ROM_SIM_DIR
    args = [os.path.abspath(rom_image), ROM_SIM_DIR] if rom_image else []
    try:
        out = subprocess.run([micropython, "-X", "heapsize=1048576", probe] + args, cwd=code_dir,
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
        raise BoardError("could not measure the simulation layer's heap with %s: %s" % (micropython, e)) from e


def write_sim_settings(flash_dir, settings):
    """Merge settings into a simulated board's sim.json (read by boards/hal_sim.py), atomically."""
    path = os.path.join(flash_dir, "sim.json")
    current = {}
    if os.path.exists(path):
        with open(path) as f:
            current = json.load(f)
    current.update(settings)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(current, f)
    os.replace(tmp, path)
    return current


def record_board(index_path, node_id, flash_dir):
    """Note a simulated board's flash directory in the index `edgefleet sim` reads."""
    index = read_index(index_path)
    index[node_id] = os.path.abspath(flash_dir)
    os.makedirs(os.path.dirname(os.path.abspath(index_path)), exist_ok=True)
    tmp = index_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
    os.replace(tmp, index_path)


def read_index(index_path):
    try:
        with open(index_path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ConfigError("simulated board index %s is not JSON: %s" % (index_path, e)) from e


def default_index_path():
    """The demo's board index, which `edgefleet sim` finds its boards by."""
    from ..paths import demo_home
    return os.path.join(demo_home(), "simboards.json")
