# Locates repository files from firmware tests, under CPython and MicroPython alike.


def _dirname(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else "."


def repo_root():
    return _dirname(_dirname(_dirname(__file__)))


def repo_path(*parts):
    return "/".join((repo_root(),) + parts)
