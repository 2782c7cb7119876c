# The board side of `edgefleet flash`: MicroPython code the flasher sends into the board's RAM
# over the raw REPL once per session, after controller/install/flash_boot.py (it is never written to
# flash), then calls one function per exec. It lives in the controller package because the host reads it from here; it is not
# imported on the host.
#
# Paths are relative to the board's current directory, the flash root after a boot.
# Output is one line per answer, so the host never has to parse Python reprs.
import binascii
import gc
import hashlib
import io
import os
import sys

try:
    import deflate
except ImportError:
    deflate = None

_buf = bytearray(1024)
_part = None    # [open file, target path] while a file is being received


def ef_feed():
    # Feeds the watchdog the interrupted node armed (machine.WDT cannot be stopped; the node
    # left its feed as ef_wdt, boards/mcu_main.py), so the board is not reset mid-flash: every
    # call below starts with it, a long digest feeds it per file, and the host calls it right
    # before the soft reset. A board whose watchdog was never armed has no ef_wdt: left alone.
    feed = globals().get("ef_wdt")
    if feed:
        feed()


def _digest(path):
    ef_feed()
    h = hashlib.sha256()
    view = memoryview(_buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(_buf)
            if not n:
                break
            h.update(view[:n])
    return binascii.hexlify(h.digest()).decode()


def _walk(top, out):
    try:
        entries = list(os.ilistdir(top))
    except OSError:
        return
    for entry in entries:
        path = top + "/" + entry[0]
        if entry[1] == 0x4000:
            _walk(path, out)
        else:
            out.append(path)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _owned(dirs, files):
    # The image's files on this board, and what else lies in the image's folders; a top-level
    # file's leftover .part from an interrupted transfer counts too, so that it gets removed.
    out = []
    for top in dirs:
        _walk(top, out)
    for name in files:
        for path in (name, name + ".part"):
            if _exists(path):
                out.append(path)
    out.sort()
    return out


def ef_probe():
    ef_feed()
    import json
    gc.collect()
    info = {"mpy": getattr(sys.implementation, "_mpy", 0), "deflate": deflate is not None,
            "free": gc.mem_free(), "uid": None, "node": None, "broker": None, "wifi": None, "slot": None,
            "machine": getattr(sys.implementation, "_machine", None)}
    # A simulated board (the unix port) says which board it plays in its environment.
    sim = getattr(os, "getenv", lambda name: None)("EDGEFLEET_SIM_MACHINE")
    if sim:
        info["machine"] = sim
    try:
        import machine
        info["uid"] = binascii.hexlify(machine.unique_id()).decode()
    except (ImportError, AttributeError, OSError):
        pass
    try:
        with open("config.json") as f:
            cfg = json.load(f)
        info["node"] = cfg.get("node")
        info["broker"] = cfg.get("broker")
        info["wifi"] = cfg.get("wifi")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with open("slots.json") as f:
            info["slot"] = json.load(f).get("active")
    except (OSError, ValueError, AttributeError):
        pass
    print(json.dumps(info))


def ef_summary(dirs, files):
    # One digest over the whole tree: an unchanged board costs one short answer.
    ef_feed()
    h = hashlib.sha256()
    for path in _owned(dirs, files):
        h.update(path.encode())
        h.update(b"\n")
        h.update(_digest(path).encode())
        h.update(b"\n")
    print(binascii.hexlify(h.digest()).decode())


def ef_listing(dirs, files):
    ef_feed()
    for path in _owned(dirs, files):
        print(path, _digest(path))


def _mkdirs(path):
    parent = ""
    for part in path.split("/")[:-1]:
        parent = parent + "/" + part if parent else part
        if not _exists(parent):
            os.mkdir(parent)


def _abort():
    global _part
    if _part is not None:
        part, _part = _part, None
        part[0].close()
        try:
            os.remove(part[1] + ".part")
        except OSError:
            pass


def ef_write(path, data, digest, wbits):
    # One chunk of a file: `path` opens the file (first chunk), `digest` ends it (last chunk);
    # `data` is raw deflate with a 2**wbits window when `wbits` is set.
    # The file is received as PATH.part and renamed over PATH only once its sha256 matches,
    # so a transfer cut short never leaves a half-written module where the firmware imports it.
    global _part
    ef_feed()
    if path is not None:
        _abort()
        _mkdirs(path)
        _part = [open(path + ".part", "wb"), path]
    f = _part[0]
    try:
        if wbits:
            stream = deflate.DeflateIO(io.BytesIO(data), deflate.RAW, wbits)
            view = memoryview(_buf)
            while True:
                n = stream.readinto(_buf)
                if not n:
                    break
                f.write(view[:n])
        else:
            f.write(data)
    except BaseException:
        _abort()   # frees the flash a full filesystem needs back
        raise
    if digest is None:
        print("more")
        return
    target = _part[1]
    f.close()
    _part = None
    got = _digest(target + ".part")
    if got != digest:
        os.remove(target + ".part")
        print("mismatch", got)
        return
    os.rename(target + ".part", target)
    gc.collect()
    print("ok")


def _prune(top, keep):
    # Removes empty folders under `top`; `keep` keeps `top` itself.
    empty = True
    for entry in list(os.ilistdir(top)):
        path = top + "/" + entry[0]
        if entry[1] == 0x4000 and _prune(path, False):
            continue
        empty = False
    if empty and not keep:
        os.rmdir(top)
    return empty


def ef_remove(paths, dirs, drop):
    # `drop`: folders that go too once empty (an old slot, a flat image's code folders).
    ef_feed()
    for path in paths:
        try:
            os.remove(path)
        except OSError as exc:
            if exc.errno != 2:   # a stale PATH.part is gone once PATH was received again
                raise
    for top in dirs:
        if _exists(top):
            _prune(top, top not in drop)
    print("ok")


# -- the ROM partition (docs/ota.md "Code in ROM") ---------------------------------------------
# Through vfs.rom_ioctl (MicroPython's extmod/vfs_rom_ioctl.c; a simulated board attaches the
# same to `vfs`): 1 segments, 2 a segment's bytes, 3 erase, 4 write, 5 done, 6 erase block.


def _rom():
    # vfs.rom_ioctl; else a simulated board's (controller/sim/mcu_rom/ef_romsim.py, on its
    # module path, not its flash): ef_release cleared the `vfs` it had attached at boot.
    try:
        import vfs
        return vfs.rom_ioctl
    except (ImportError, AttributeError):
        pass
    try:
        import ef_romsim
    except ImportError:
        return None
    ef_romsim.attach()
    return ef_romsim.rom_ioctl


def ef_rom_query():
    # "none REASON" or "rom ERASE_BLOCK SIZE0 SIZE1 ...": one size per segment.
    # The node that was interrupted has its segment mounted at /rom: unmounted first, as
    # mpremote's deploy does (a simulated board's mapped window is heap, freed with it).
    ef_feed()
    try:
        import vfs
        vfs.umount("/rom")
    except (ImportError, OSError):
        pass
    gc.collect()
    f = _rom()
    if f is None:
        print("none this MicroPython has no vfs.rom_ioctl")
        return
    n = f(1)
    if n <= 0:
        print("none the board has no ROM partition")
        return
    sizes = []
    for i in range(n):
        seg = f(2, i)
        sizes.append(-1 if isinstance(seg, int) else len(seg))
        seg = None
        gc.collect()
    print("rom", f(6, 0), " ".join(str(s) for s in sizes))


def _seg_digest(f, index, offset, length):
    seg = f(2, index)
    h = hashlib.sha256()
    end = min(len(seg), offset + length)
    while offset < end:
        h.update(seg[offset:min(end, offset + 1024)])
        offset += 1024
    return binascii.hexlify(h.digest()).decode()


def ef_rom_digest(index, finish):
    # sha256 of the whole segment; `finish` first ends a write (op 5: a port may cache).
    ef_feed()
    f = _rom()
    if finish:
        f(5, index)
    print(_seg_digest(f, index, 0, len(f(2, index))))


def ef_rom_erase(index, length):
    # Prints the write granularity the segment takes.
    ef_feed()
    r = _rom()(3, index, 0, length)
    if r < 0:
        raise OSError(-r)
    print(r)


def ef_rom_write(index, offset, data, wbits, digest):
    # One chunk at `offset` (raw deflate with a 2**wbits window when `wbits` is set); then the
    # bytes the segment holds there now are hashed, so the flash is checked, not what arrived.
    ef_feed()
    if wbits:
        data = deflate.DeflateIO(io.BytesIO(data), deflate.RAW, wbits).read()
    f = _rom()
    r = f(4, index, offset, data)
    if r < 0:
        raise OSError(-r)
    n = len(data)
    data = None
    gc.collect()
    got = _seg_digest(f, index, offset, n)
    print("ok" if got == digest else "mismatch " + got)


ef_feed()   # loading this took a while on a slow link
