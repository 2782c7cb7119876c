# Runs ON the MicroPython board (the unix port in the benchmark, at an MCU heap): the outbox's
# heap cost and append rate with a board's flush policy, beside the naive one-write-per-result
# approach. Usage:
#   micropython outbox_probe.py DIR RECORDS CAPACITY SEGMENT FLUSH_RECORDS ACK_EVERY  -> one JSON line
import gc
import json
import sys
import time

gc.collect()
heap_base = gc.mem_alloc()
from firmware.outbox import HEADER_SIZE, Outbox  # noqa: E402
import os  # noqa: E402


def result_payload(seq):
    # What a node's `result` message looks like on the wire (~150 bytes).
    return json.dumps({"v": 1, "node": "mcu-esp32-1", "boot": 3, "seq": seq, "wl": "digits-mcu",
                       "up": 1234567 + seq * 250, "label": seq % 10, "score": 0.98047, "us": 1843,
                       "in": seq % 200, "truth": seq % 10}).encode()


def remove_tree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        os.remove(path + "/" + name)
    os.rmdir(path)


def batched(directory, records, capacity, segment, flush_records, ack_every):
    box = Outbox(directory, capacity, segment, flush_records)
    box.recover()
    payload_bytes = 0
    # The controller acknowledges about once a second; here every `ack_every` results, so the
    # outbox trims as on a connected node instead of filling up and dropping.
    t0 = time.ticks_us()
    for seq in range(1, records + 1):
        payload = result_payload(seq)
        payload_bytes += len(payload)
        box.append("result", 3, seq, payload)
        if seq % ack_every == 0:
            box.flush()
            box.ack(3, seq - ack_every)
    box.flush()
    elapsed_us = time.ticks_diff(time.ticks_us(), t0)
    return box, elapsed_us, payload_bytes


def unbatched(directory, records):
    # A node without batching: one open/append/close per result (same record format).
    from firmware.outbox import encode_record
    try:
        os.mkdir(directory)
    except OSError:
        pass
    path = directory + "/00000001.seg"
    written = 0
    t0 = time.ticks_us()
    for seq in range(1, records + 1):
        record = encode_record("result", 3, seq, result_payload(seq))
        with open(path, "ab") as f:
            f.write(record)
        written += len(record)
    return time.ticks_diff(time.ticks_us(), t0), written


def main(directory, records, capacity, segment, flush_records, ack_every):
    gc.collect()
    import_bytes = gc.mem_alloc() - heap_base
    box, elapsed_us, payload_bytes = batched(directory + "/batched", records, capacity, segment, flush_records,
                                             ack_every)
    # Steady state: what the module and a used Outbox (index, counters, cursor) keep holding.
    box.next_batch(8)
    gc.collect()
    ram_bytes = gc.mem_alloc() - heap_base
    stats = box.stats()
    flushes, written, dropped = box.flushes, box.bytes_written, box.dropped
    del box
    remove_tree(directory + "/batched")
    gc.collect()
    naive_us, naive_written = unbatched(directory + "/unbatched", records)
    remove_tree(directory + "/unbatched")
    print(json.dumps({
        "records": records, "payload_bytes_mean": payload_bytes // records, "header_bytes": HEADER_SIZE,
        "append_per_s": round(records * 1e6 / elapsed_us), "append_per_s_unbatched": round(records * 1e6 / naive_us),
        "flash_writes_per_record": round(flushes / records, 4), "flash_writes_per_record_unbatched": 1.0,
        "write_amplification": round(written / payload_bytes, 3),
        "write_amplification_unbatched": round(naive_written / payload_bytes, 3),
        "outbox_import_bytes": import_bytes, "outbox_ram_bytes": ram_bytes, "records_on_flash": stats["records"],
        "dropped": dropped, "heap_total": gc.mem_alloc() + gc.mem_free(),
    }))


main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
