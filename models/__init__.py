"""The fleet's models: one folder per model with model.tflite, manifest.json and test data.

Installed as the data package edgefleet.models, so the controller and the board image builder
find the same files in a checkout and in an installed copy.
"""
import json
import os

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
MODEL_FILES = ("model.tflite", "manifest.json", "samples.bin", "labels.bin")


def names(models_dir=MODELS_DIR):
    return sorted(d for d in os.listdir(models_dir) if os.path.exists(os.path.join(models_dir, d, "model.tflite")))


def manifest(name, models_dir=MODELS_DIR):
    with open(os.path.join(models_dir, name, "manifest.json")) as f:
        return json.load(f)


def manifests(models_dir=MODELS_DIR):
    return {name: manifest(name, models_dir) for name in names(models_dir)}
