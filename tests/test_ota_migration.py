"""Migrating a board from the shared HMAC key to Ed25519 (docs/ota.md, "Migrating HMAC boards"):
the firmware from before the change (the last commit with it, taken from git) installs the
HMAC-signed migration bundle; the new firmware, once confirmed, installs the public key it
brought and deletes the fleet key; from then on only Ed25519 bundles install."""
import asyncio
import binascii
import os
import subprocess
import sys

import pytest

from edgefleet.controller.deploy import bundle
from edgefleet.controller.errors import EXIT_CONFIG
from edgefleet.controller.install import keys
from edgefleet.firmware import adopt_key, health, slots
from edgefleet.firmware.ota import Receiver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HMAC_FIRMWARE = "4f21896"   # the last commit whose firmware checks bundles with the HMAC fleet key
KEY = bytes(range(32))          # the controller's new signing key
LEGACY_KEY = bytes(range(100, 132))

OLD_NODE = r"""
import binascii, sys
from firmware.ota import Receiver
root, path, board = sys.argv[1:4]
data = open(path, "rb").read()
rx = Receiver(root, board, "cpython")
report = rx.handle({"v": 1, "id": "migrate", "op": "begin", "size": len(data)})[0]
off = 0
while report["state"] == "receiving" and off < len(data):
    piece = data[off:off + 1536]
    report = rx.handle({"v": 1, "id": "migrate", "op": "chunk", "off": off,
                        "data": binascii.b2a_base64(piece).decode().strip()})[0]
    off += len(piece)
print(report["state"], report.get("err", ""))
"""


@pytest.fixture(scope="module")
def old_firmware(tmp_path_factory):
    dest = tmp_path_factory.mktemp("hmac-firmware")
    archive = subprocess.run(["git", "-C", REPO, "archive", HMAC_FIRMWARE, "firmware"], capture_output=True)
    if archive.returncode != 0:
        pytest.skip("no git history here to take the HMAC firmware from: %s" % archive.stderr.decode()[-200:])
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    assert (dest / "firmware" / "hmac256.py").exists()
    return str(dest)


def _old_node_takes(old_firmware, root, data, tmp_path):
    path = tmp_path / "bundle.efb"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", OLD_NODE, root, str(path), "rpi4"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=old_firmware), cwd=old_firmware, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _hmac_board(tmp_path):
    """A flash as the old flasher left it: slot_a, the pointer, and the shared key as fleet.key."""
    root = tmp_path / "flash"
    (root / "slot_a").mkdir(parents=True)
    slots.write(str(root), slots.initial("slot_a", "0.1.0", "flashed"))
    (root / keys.LEGACY_FILE).write_text(LEGACY_KEY.hex() + "\n")
    return str(root)


def _new_node_takes(root, data, bundle_id):
    rx = Receiver(root, "rpi4", "cpython")
    report = rx.handle({"v": 1, "id": bundle_id, "op": "begin", "size": len(data)})[0]
    off = 0
    while report["state"] == "receiving" and off < len(data):
        piece = data[off:off + 1536]
        report = rx.handle({"v": 1, "id": bundle_id, "op": "chunk", "off": off,
                            "data": binascii.b2a_base64(piece).decode().strip()})[0]
        off += len(piece)
    return report


def test_an_hmac_board_migrates_with_one_last_hmac_bundle(old_firmware, tmp_path):
    root = _hmac_board(tmp_path)
    # The old firmware refuses a migration bundle under another HMAC key, and takes the real one.
    forged = bundle.build_migration("rpi4", "0.3.0", KEY, bytes(32), models=[])
    assert _old_node_takes(old_firmware, root, forged, tmp_path).startswith("rejected")
    data = bundle.build_migration("rpi4", "0.3.0", KEY, LEGACY_KEY, models=[])
    assert data[:4] == b"EFB1"
    assert _old_node_takes(old_firmware, root, data, tmp_path) == "switching"
    pointer = slots.read(root)
    assert pointer["active"] == "slot_b" and pointer["tentative"]
    assert keys.parse(open(os.path.join(root, "slot_b", keys.BOARD_FILE)).read()) == keys.public(KEY)
    # On probation the new version adopts nothing: a revert must find the old key in place.
    assert not adopt_key.adopt_public_key(root, pointer)
    assert os.path.exists(os.path.join(root, keys.LEGACY_FILE))
    # Confirmed (the next boot's guard sees a confirmed slot): the public key goes to the flash
    # root and the shared secret is deleted.
    slots.write(root, slots.confirm(pointer))
    asyncio.run(health.guard(None, root))
    assert keys.parse(open(os.path.join(root, keys.BOARD_FILE)).read()) == keys.public(KEY)
    assert not os.path.exists(os.path.join(root, keys.LEGACY_FILE))
    assert sorted(os.listdir(root)) == ["sign.pub", "slot_a", "slot_b", "slots.json"]
    # From now on: Ed25519 bundles install, HMAC ones do not, and no slot replaces the key.
    assert _new_node_takes(root, bundle.build_migration("rpi4", "0.3.1", bytes(32), LEGACY_KEY, models=[]),
                           "again")["state"] == "rejected"
    report = _new_node_takes(root, bundle.build("rpi4", "0.4.0", KEY, models=[], seq=1), "ed")
    assert report["state"] == "switching", report
    slots.write(root, slots.confirm(slots.read(root)))
    assert not adopt_key.adopt_public_key(root, slots.read(root))
    assert keys.parse(open(os.path.join(root, keys.BOARD_FILE)).read()) == keys.public(KEY)


def test_the_cli_builds_a_migration_bundle_and_deploy_checks_it(tmp_path, monkeypatch, capsys):
    from edgefleet.controller import cli
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    key = keys.create()
    out = str(tmp_path / "migrate.efb")
    args = ["bundle", "--board", "rpi4", "--version", "0.3.0", "--models", "digits_dense", "--hmac-migration", "-o", out]
    assert cli.main(args) == EXIT_CONFIG and "no old fleet key" in capsys.readouterr().err
    (tmp_path / keys.LEGACY_FILE).write_text(LEGACY_KEY.hex() + "\n")
    assert cli.main(args) == 0, capsys.readouterr().err
    data = open(out, "rb").read()
    assert bundle.inspect_migration(data, key, LEGACY_KEY)["manifest"]["version"] == "0.3.0"
    assert LEGACY_KEY not in data and key not in data and key.hex().encode() not in data
    # deploy refuses a migration bundle that would install another controller's public key, or
    # that the old fleet key did not sign; both before sending anything (port 9: no broker).
    other = bundle.build_migration("rpi4", "0.3.0", bytes(32), LEGACY_KEY, models=[])
    forged = bundle.build_migration("rpi4", "0.3.0", key, bytes(32), models=[])
    for data, why in ((other, "public key other than this controller's"), (forged, "old fleet key")):
        (tmp_path / "bad.efb").write_bytes(data)
        assert cli.main(["deploy", str(tmp_path / "bad.efb"), "--to", "n1", "--broker", "127.0.0.1:9"]) == EXIT_CONFIG
        assert why in capsys.readouterr().err
