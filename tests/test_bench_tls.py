"""The TLS benchmark (tools/bench/tls.py) at small scale: the node's TLS link measured under the
real MicroPython interpreter against the fleet's broker, the controller's ingest over TLS and
plaintext, and the board profiles' recorded TLS cost still what the firmware pays."""
import json
import shutil

import pytest

from edgefleet.boards import catalog
from support.bench import load_bench

KEYS = {"mcu_tls_heap_peak_bytes", "mcu_tls_heap_steady_bytes", "mcu_handshake_s", "ingest_tls_msgs_per_s",
        "ingest_plain_msgs_per_s", "tls_ratio", "mcu_model", "mcu_null_reasons"}




@pytest.mark.e2e
@pytest.mark.micropython
def test_tls_bench_measures_the_node_link_and_both_ingests_and_matches_the_profiles(capsys):
    bench = load_bench("tls")
    out = bench.main(["--messages", "2000", "--rounds", "1", "--connects", "2"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == out and KEYS <= set(line)
    assert line["ingest_tls_msgs_per_s"] > 0 and line["ingest_plain_msgs_per_s"] > 0 and line["tls_ratio"] > 0
    assert line["ingest_order"] == ["plain", "tls"]
    mcus = [p for p in catalog.all_profiles() if p["runtime"] == "micropython"]
    assert set(line["mcu_detail"]) == {p["name"] for p in mcus}
    for profile in mcus:
        name, part = profile["name"], line["mcu_detail"][profile["name"]]
        # The real interpreter connected over TLS at the board's heap, in well under a second here.
        assert 0 < part["handshake_s"] < 2 and part["plain_connect_s"] < part["handshake_s"]
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            continue   # mbedTLS's malloc outside the GC heap cannot be counted
        # Beyond plaintext, both record buffers at least: mbedTLS's allocations are counted.
        assert sum(line["mcu_record_buffers_bytes"]) <= part["malloc_steady"] < part["steady_bytes"] <= part["peak_bytes"]
        # A null figure comes with its reason, and only where the profile cannot hold TLS.
        assert (line["mcu_tls_heap_steady_bytes"][name] is None) == (not part["fits"]) == (name in line["mcu_null_reasons"])
        # The profile's recorded cost is still what the firmware pays (rerun the bench with
        # --write-profiles when the client or the TLS stack changes).
        recorded = profile["tls"]
        for key, measured in (("heap_peak_bytes", part["peak_bytes"]), ("heap_steady_bytes", part["steady_bytes"])):
            assert abs(recorded[key] - measured) <= max(1024, measured // 30), (name, key, recorded[key], measured)
        assert recorded["fits"] == part["fits"], (name, recorded, part)
    if line["mcu_massif_peak_delta_bytes"] is not None:
        # valgrind's massif sees the same mbedTLS peak (requested bytes, a little under usable sizes).
        malloc_peak = line["mcu_detail"][mcus[0]["name"]]["malloc_peak"]
        assert 0.9 * malloc_peak <= line["mcu_massif_peak_delta_bytes"] <= malloc_peak
