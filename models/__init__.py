"""The fleet's models: one folder per model with model.tflite, manifest.json and test data.

Installed as the data package edgefleet.models, so the controller and the board image builder
find the same files in a checkout and in an installed copy.

Two places hold models: the bundled ones here (MODELS_DIR) and the user's own, added with
`edgefleet model add` into user_models_dir() (<state home>/models/NAME/), never into the
installed package. names()/manifest()/manifests() see both; a user model never takes a bundled
model's name (`model add` refuses it, and a folder made by hand under such a name is ignored).
"""
import json
import os

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
MODEL_FILES = ("model.tflite", "manifest.json", "samples.bin", "labels.bin")
BUNDLED = "bundled"
USER = "user"


def user_models_dir():
    # Imported here: the data package is imported by code that never needs the controller.
    from edgefleet.controller import paths
    return os.path.join(paths.state_home(), "models")


def _names_in(models_dir):
    if not os.path.isdir(models_dir):
        return []
    # A folder starting with "." is a model `edgefleet model add` is still checking.
    return sorted(d for d in os.listdir(models_dir)
                  if not d.startswith(".") and os.path.exists(os.path.join(models_dir, d, "model.tflite")))


def bundled_names():
    return _names_in(MODELS_DIR)


def user_names():
    bundled = set(bundled_names())
    return [n for n in _names_in(user_models_dir()) if n not in bundled]


def names(models_dir=None):
    """Every model's name (bundled and the user's); with models_dir, only that folder's."""
    if models_dir is not None:
        return _names_in(models_dir)
    return sorted(bundled_names() + user_names())


def source(name):
    """BUNDLED, USER, or None for no such model."""
    if os.path.exists(os.path.join(MODELS_DIR, name, "model.tflite")):
        return BUNDLED
    if os.path.exists(os.path.join(user_models_dir(), name, "model.tflite")):
        return USER
    return None


def model_dir(name):
    """The folder holding model `name` (bundled first: a bundled name is never shadowed)."""
    return os.path.join(user_models_dir() if source(name) == USER else MODELS_DIR, name)


def manifest(name, models_dir=None):
    folder = os.path.join(models_dir, name) if models_dir is not None else model_dir(name)
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)


def manifests(models_dir=None):
    return {name: manifest(name, models_dir) for name in names(models_dir)}
