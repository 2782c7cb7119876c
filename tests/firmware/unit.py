# A tiny test runner in the MicroPython/CPython common subset.
#
# Firmware test modules in this folder define functions named test_*; the pytest driver
# (tests/test_firmware_units.py) runs each module under CPython and under the real MicroPython
# interpreter with `python unit.py MODULE`, and reads one JSON line per test from stdout.
# Async tests are coroutine functions; they run under asyncio.run.
import gc
import sys
import json

try:
    import asyncio
except ImportError:
    asyncio = None


class Skip(Exception):
    pass


def _is_generator_function(fn):
    # Coroutine functions on MicroPython are generator functions; on CPython check the flag.
    code = getattr(fn, "__code__", None)
    if code is not None:
        return bool(code.co_flags & 0x80) or bool(code.co_flags & 0x20)
    return type(fn).__name__ == "generator"


def raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError("expected %s" % exc_type.__name__)


def bounded(seconds):
    """Run an async test under a deadline, so a hung link fails the test instead of the run."""
    def wrap(body):
        def test():
            return asyncio.wait_for(body(), seconds)
        return test
    return wrap


def _format_exc(e):
    try:
        import traceback
        return "".join(traceback.format_exception(type(e), e, e.__traceback__))
    except Exception:
        pass
    try:
        import io
        buf = io.StringIO()
        sys.print_exception(e, buf)
        return buf.getvalue()
    except Exception:
        return repr(e)


def run_module(name, only=None):
    mod = __import__(name)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    failed = 0
    for n in names:
        if only and n != only:
            continue
        fn = getattr(mod, n)
        status, detail = "pass", ""
        # Each test starts from a collected heap, as a board's code after boot would: what one
        # test left for the collector must not decide whether the next one fits.
        gc.collect()
        try:
            result = fn()
            if result is not None and asyncio is not None and hasattr(result, "send"):
                asyncio.run(result)
        except Skip as e:
            status, detail = "skip", str(e)
        except BaseException as e:  # noqa: B036 - report everything, including KeyboardInterrupt
            status, detail = "fail", _format_exc(e)
            failed += 1
        print(json.dumps({"test": n, "status": status, "detail": detail}))
    return failed


def mount_rom(path):
    """Run the firmware in place from the ROMFS image at `path`, as a board whose code store is
    romfs does: read onto the heap here (the driver gave the heap exactly that much more)."""
    import os
    import vfs
    buf = bytearray(os.stat(path)[6])
    with open(path, "rb") as f:
        f.readinto(buf)
    vfs.mount(vfs.VfsRom(buf), "/rom")
    sys.path.insert(0, "/rom")


if __name__ == "__main__":
    if len(sys.argv) > 3:
        mount_rom(sys.argv[3])
    # Run as the module the tests import (`from unit import Skip`), so the Skip they raise is
    # the one run_module catches, not this __main__ copy's.
    import unit
    only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    sys.exit(1 if unit.run_module(sys.argv[1], only) else 0)
