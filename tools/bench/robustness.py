"""Hostile input against the controller, and what verifying signed code costs a board.

One run, side by side:
- fuzz: FLEET_CASES seeded random messages (random bytes, random JSON, valid messages with one
  field replaced by anything: huge integers, NaN, deep nesting, wrong types) fed to the
  controller's `handle`, with a `tick` every TICK_EVERY messages. A failure is an exception that
  escapes either: in the running service it would end the controller's thread. The same cases go
  through the baseline: this project as it was before issue 15 (git commit BASELINE), run from a
  `git archive` of it in a subprocess.
- corpus: the issue's attack messages published through a real mosquitto to a running
  ControllerService; `controller_alive` says whether its thread lived and its lease kept flowing.
- ed25519: bundle verification under real MicroPython at the ESP32 heap (tools/bench/signing.py).

    python tools/bench/robustness.py [--cases 3000] [--seed 15]

The last line printed is JSON: fuzz_cases, fuzz_failures, corpus_cases, controller_alive,
ed25519_verify_s_mcu, ed25519_verify_heap_bytes, and the baseline's figures beside them.
"""
import argparse
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASELINE = "554a370"   # main before issues 14 and 15
TICK_EVERY = 50
VICTIM = "victim"
NODE_KINDS = ("hello", "status", "hb", "result", "event", "reply", "ota_state")


def valid_messages():
    """One well-formed message per node->controller kind (the fuzzer's starting points)."""
    power = {"src": "battery", "pct": 80.0, "mw": 150.0}
    return {
        "hello": {"v": 1, "node": VICTIM, "board": "rpi4", "runtime": "cpython", "fw": "0.1.0", "boot": 1,
                  "caps": {"heap": 1 << 30, "flash": 1 << 30, "backends": ["engine"], "models": ["digits_dense"]}},
        "hb": {"v": 1, "node": VICTIM, "boot": 1, "seq": 1, "up": 1000, "cpu": 5.0, "mem_free": 1000,
               "mem_total": 2000, "power": power, "temp": 40.0, "wl": []},
        "result": {"v": 1, "node": VICTIM, "boot": 1, "seq": 1, "wl": "digits", "up": 1000, "label": 3,
                   "score": 0.9, "us": 100},
        "status": {"v": 1, "node": VICTIM, "state": "online", "boot": 1},
        "event": {"v": 1, "node": VICTIM, "boot": 1, "up": 5, "level": "warn", "kind": "x", "msg": "m"},
        "reply": {"v": 1, "id": "c-1", "ok": True, "data": {}},
        "ota_state": {"v": 1, "node": VICTIM, "boot": 1, "id": "u", "state": "confirmed", "off": 0},
    }


def json_value(rng, depth=0):
    pick = rng.randrange(12)
    if pick == 0:
        return rng.choice([2 ** 63, -2 ** 63 - 1, 2 ** 64 + 7, 10 ** 30, -1, 0])
    if pick == 1:
        return rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, -0.0])
    if pick == 2:
        return rng.randrange(-1000, 1000)
    if pick == 3:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)]))
                       for _ in range(rng.randrange(0, 40)))
    if pick == 4:
        return rng.choice([True, False, None])
    if pick == 5:
        return rng.random() * 100
    if pick in (6, 7) and depth < 6:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if pick in (8, 9) and depth < 6:
        return {rng.choice(["heap", "models", "src", "oldest", "id", "x"]): json_value(rng, depth + 1)
                for _ in range(rng.randrange(0, 4))}
    if pick == 10:
        n = rng.randrange(50, 1200)
        return json.loads("[" * n + "]" * n) if n < 900 else "deep"
    return rng.choice(["", "a" * 300, "../../etc", "digits_dense"])


def make_cases(count, seed):
    """(topic, payload bytes) pairs, the same for a given seed."""
    rng = random.Random(seed)
    valid = valid_messages()
    cases = []
    for _ in range(count):
        kind = rng.choice(NODE_KINDS)
        topic = "ef/node/%s/%s" % (VICTIM, kind)
        roll = rng.random()
        if roll < 0.25:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400)))
        elif roll < 0.5:
            payload = json.dumps(json_value(rng)).encode()
        elif roll < 0.55:
            n = rng.randrange(100, 3000)
            payload = ("[" * n + "]" * n).encode()
        else:
            msg = json.loads(json.dumps(valid[kind]))
            field = rng.choice(sorted(msg) + ["caps.heap", "caps.models", "power.src", "outbox"])
            head, _, tail = field.partition(".")
            if tail and isinstance(msg.get(head), dict):
                msg[head][tail] = json_value(rng)
            else:
                msg[field] = json_value(rng)
            payload = json.dumps(msg).encode()
        cases.append((topic, payload))
    return cases


def corpus():
    """The attack messages of issue 15, one each."""
    valid = valid_messages()

    def with_(kind, **changes):
        msg = json.loads(json.dumps(valid[kind]))
        msg.update(changes)
        return json.dumps(msg).encode()

    hb, hello = "ef/node/%s/hb" % VICTIM, "ef/node/%s/hello" % VICTIM
    caps = dict(valid["hello"]["caps"])
    return [
        (hb, ("[" * 1024 + "]" * 1024).encode()),
        (hb, with_("hb", seq=2 ** 63)),
        (hb, with_("hb", up=-2 ** 63 - 1)),
        (hello, with_("hello", caps=dict(caps, heap="lots"))),
        (hello, with_("hello", caps=dict(caps, models=7))),
        (hb, with_("hb", cpu=float("nan"))),
        (hb, with_("hb", temp=float("inf"))),
        (hb, with_("hb").replace(b'"cpu": 5.0', b'"cpu": 1e999')),
        (hb, b"\xff\xfe{"),
    ]


# -- the runner: whatever `edgefleet` is importable (this checkout, or the baseline's) -----------

def run_cases(cases):
    """Feed `cases` to one FleetController; count exceptions escaping handle and tick."""
    from edgefleet.controller.fleet.controller import FleetController
    from edgefleet.controller.store import open_registry
    now = [1.8e9]
    ctl = FleetController(open_registry(":memory:"), manifests={}, clock=lambda: now[0])
    valid = valid_messages()
    for kind in ("hello", "hb"):
        ctl.handle("ef/node/%s/%s" % (VICTIM, kind), json.dumps(valid[kind]).encode())
    failures, first = 0, None
    lease_every_tick = True
    for i, (topic, payload) in enumerate(cases):
        now[0] += 0.05
        try:
            ctl.handle(topic, payload)
        except Exception as e:  # noqa: BLE001 - what is being counted
            failures += 1
            first = first if first is not None else (i, "%s: %s" % (type(e).__name__, str(e)[:120]))
        if i % TICK_EVERY == TICK_EVERY - 1:
            try:
                effects = ctl.tick()
                lease_every_tick = lease_every_tick and any(e.topic.endswith("/ctrl/lease") for e in effects)
            except Exception as e:  # noqa: BLE001
                failures += 1
                lease_every_tick = False
                first = first if first is not None else (i, "tick %s: %s" % (type(e).__name__, str(e)[:120]))
    return {"cases": len(cases), "failures": failures, "first_failure": first, "lease_every_tick": lease_every_tick}


def _encode(cases):
    return [[t, base64.b64encode(p).decode()] for t, p in cases]


def _decode(rows):
    return [(t, base64.b64decode(p)) for t, p in rows]


def baseline_run(cases, work):
    """run_cases under the baseline commit's code, from a git archive of it; None and why when
    this checkout has no git history."""
    archive = os.path.join(work, "baseline")
    os.makedirs(archive)
    tar = subprocess.run(["git", "-C", REPO, "archive", BASELINE, "controller", "firmware", "boards", "models"],
                         capture_output=True)
    if tar.returncode != 0:
        return None, "no git history for %s: %s" % (BASELINE, tar.stderr.decode(errors="replace").strip()[:200])
    subprocess.run(["tar", "-x", "-C", archive], input=tar.stdout, check=True)
    package = os.path.join(work, "pkg", "edgefleet")
    os.makedirs(package)
    for name in ("controller", "firmware", "boards", "models"):
        os.symlink(os.path.join(archive, name), os.path.join(package, name))
    cases_file = os.path.join(work, "cases.json")
    with open(cases_file, "w") as f:
        json.dump(_encode(cases), f)
    import site
    # -S: no site-packages .pth files, so this checkout's editable install cannot shadow the
    # baseline's package; the dependencies come in through PYTHONPATH instead.
    path = [os.path.join(work, "pkg")] + site.getsitepackages()
    proc = subprocess.run([sys.executable, "-S", os.path.abspath(__file__), "--run-cases", cases_file],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(path)),
                          timeout=600)
    if proc.returncode != 0:
        return None, "baseline run failed: %s" % proc.stderr.strip()[-300:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def corpus_through_broker(messages, rounds=3):
    """The corpus published to a live ControllerService over a real mosquitto: is its thread
    alive afterwards, and does its lease keep coming back?"""
    import paho.mqtt.client as mqtt
    from edgefleet.controller.broker import MosquittoBroker
    from edgefleet.controller.fleet.service import ControllerService
    leases = []
    with tempfile.TemporaryDirectory(prefix="ef-robust-") as tmp, MosquittoBroker() as broker:
        service = ControllerService(broker.host, broker.port, db_path=os.path.join(tmp, "fleet.db")).start()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="robustness-attacker")
        client.on_message = lambda c, u, m: leases.append(time.monotonic())
        client.connect(broker.host, broker.port)
        client.subscribe("ef/ctrl/lease", qos=0)
        client.loop_start()
        try:
            valid = valid_messages()
            for kind in ("hello", "hb"):
                client.publish("ef/node/%s/%s" % (VICTIM, kind), json.dumps(valid[kind]), qos=1).wait_for_publish(5)
            for _ in range(rounds):
                for topic, payload in messages:
                    client.publish(topic, payload, qos=1).wait_for_publish(5)
            sent_at = time.monotonic()
            time.sleep(3.5)
            alive = service._thread.is_alive() and sum(1 for t in leases if t > sent_at + 0.5) >= 2
        finally:
            client.loop_stop()
            client.disconnect()
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - a dead loop reports itself on stop; counted above
                pass
    return alive, len(messages) * rounds


def signing_figures():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import signing
    return signing.measure()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=3000)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--run-cases", help=argparse.SUPPRESS)
    p.add_argument("--skip-signing", action="store_true", help="leave out the MicroPython verification figures")
    args = p.parse_args(argv)
    if args.run_cases:
        with open(args.run_cases) as f:
            print(json.dumps(run_cases(_decode(json.load(f)))))
        return None
    import logging
    logging.disable(logging.WARNING)   # rejected messages are logged once each: thousands here
    started = time.monotonic()
    cases = make_cases(args.cases, args.seed) + corpus()
    ours = run_cases(cases)
    print("fuzz: %d cases, %d failures (first: %s)" % (ours["cases"], ours["failures"], ours["first_failure"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="ef-robust-base-") as work:
        base, why = baseline_run(cases, work)
    if base is not None:
        print("baseline %s: %d failures (first: %s)" % (BASELINE, base["failures"], base["first_failure"]), flush=True)
    alive, corpus_count = corpus_through_broker(corpus())
    print("corpus through mosquitto: %d messages, controller alive and leasing: %s" % (corpus_count, alive), flush=True)
    sign = {} if args.skip_signing else signing_figures()
    line = {
        "fuzz_cases": ours["cases"], "fuzz_failures": ours["failures"], "fuzz_lease_every_tick": ours["lease_every_tick"],
        "corpus_cases": corpus_count, "controller_alive": alive,
        "ed25519_verify_s_mcu": sign.get("ed25519_verify_s_mcu"),
        "ed25519_verify_heap_bytes": sign.get("ed25519_verify_heap_bytes"),
        "baseline": BASELINE, "baseline_fuzz_failures": base["failures"] if base else None,
        "baseline_first_failure_case": base["first_failure"][0] if base and base["first_failure"] else None,
        "baseline_note": why, "seed": args.seed, "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
