# The first code `edgefleet flash` runs on a board, before controller/flash_agent.py: it frees
# the heap and says what the board can take. Sent as source with a call to ef_boot() appended.
import gc
import sys

# The program the flasher interrupted (main.py) still holds its modules and globals; dropping
# them gives the transfer the heap, which a board running the node needs. The board is reset
# after flashing, so nothing of value is lost.
for _name in list(globals()):
    if _name not in ("__name__", "__file__", "gc", "sys"):
        del globals()[_name]
sys.modules.clear()
gc.collect()


def ef_boot(sample):
    # Prints whether the board has `deflate`, and the sha256 of `sample` (a bytes literal of
    # every byte value) as this board's lexer read it: the host compares it with its own.
    import binascii
    import hashlib
    try:
        import deflate
    except ImportError:
        deflate = None
    print(deflate is not None, binascii.hexlify(hashlib.sha256(sample).digest()).decode())
