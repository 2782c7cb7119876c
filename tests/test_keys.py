import os
import stat

import pytest

from edgefleet.controller.install import keys
from edgefleet.controller.errors import ConfigError


def test_a_created_key_loads_back_and_is_private(tmp_path):
    path = str(tmp_path / "fleet.key")
    key = keys.create(path)
    assert len(key) == keys.KEY_BYTES and keys.load(path) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.load_or_create(path) == key


def test_an_existing_key_is_not_replaced_unless_asked(tmp_path):
    path = str(tmp_path / "fleet.key")
    first = keys.create(path)
    with pytest.raises(ConfigError, match="already exists"):
        keys.create(path)
    assert keys.create(path, overwrite=True) != first


@pytest.mark.parametrize("text, why", [("zz", "not hex"), ("abcd", "holds 2 bytes"), ("", "holds 0 bytes")])
def test_a_bad_key_file_is_named(tmp_path, text, why):
    path = tmp_path / "fleet.key"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why) as info:
        keys.load(str(path))
    assert str(path) in str(info.value)


def test_a_missing_key_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="edgefleet keygen"):
        keys.load(str(tmp_path / "none.key"))


def test_keygen_force_over_a_world_readable_key_leaves_it_private(tmp_path, capsys):
    from edgefleet.controller import cli
    path = tmp_path / "fleet.key"
    path.write_text("00" * keys.KEY_BYTES + "\n")
    os.chmod(path, 0o644)
    assert cli.main(["keygen", "--force", "--path", str(path)]) == 0, capsys.readouterr().err
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.load(str(path)) != bytes(keys.KEY_BYTES)
    assert os.listdir(tmp_path) == ["fleet.key"]    # no temporary file left beside it
