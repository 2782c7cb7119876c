"""Simulated boards and fleets on this machine (MicroPython unix port, CPython, qemu-user),
cuttable links, the chaos soak and the demo. Never part of what goes on a real board."""
