# Run by `edgefleet flash` after controller/install/flash_release.py freed the heap, before
# controller/install/flash_agent.py: it says what the board can take. Sent as source with a call to
# ef_boot() appended.


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
