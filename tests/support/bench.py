"""Benchmark scripts (tools/bench/*.py) loaded as modules, for their small-scale tests."""
import importlib.util
import os

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools", "bench")


def load_bench(name):
    spec = importlib.util.spec_from_file_location("bench_" + name, os.path.join(BENCH_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
