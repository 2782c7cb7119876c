# The activation arena plan of a model.Model, for host tools; the engine plans with
# loader.plan directly.
from . import loader


def plan(model):
    """(arena size in bytes, {tensor index: offset})."""
    return loader.plan(model.graph)
