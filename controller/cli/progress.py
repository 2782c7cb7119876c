"""Progress the CLI shows while it works (`flash`, `deploy`): one line redrawn in place on a
terminal, whole lines otherwise (a CI log, a pipe), so that a log never fills with carriage
returns."""
import sys

from ..install.flasher import Progress

BAR_WIDTH = 30


def bar(share):
    """`[#####.....]  50%` for a share from 0 to 1."""
    filled = int(share * BAR_WIDTH)
    return "[%s%s] %3d%%" % ("#" * filled, "." * (BAR_WIDTH - filled), int(share * 100))


class ProgressLine:
    def __init__(self, stream=None, tty=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._drawn = False

    def draw(self, text):
        """Redraw the line in place (on a terminal only)."""
        if self.tty:
            self.stream.write("\r" + text)
            self.stream.flush()
            self._drawn = True

    def line(self, text):
        """A line of its own, below the one being redrawn."""
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self):
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class FlashProgress(Progress):
    """What `edgefleet flash` shows: a bar of the bytes sent, or a line per file written."""

    def __init__(self, stream=None, tty=None):
        self.out = ProgressLine(stream, tty)
        self.total = 0
        self.done = 0

    def start(self, files, total_bytes):
        self.total = total_bytes
        self.done = 0
        if not self.out.tty:
            self.out.line("sending %d files (%.1f KB)" % (files, total_bytes / 1024.0))

    def advance(self, path, nbytes):
        self.done += nbytes
        share = self.done / float(self.total) if self.total else 1.0
        self.out.draw("%s %7.1f/%.1f KB  %-40.40s" % (bar(share), self.done / 1024.0, self.total / 1024.0, path))

    def file_done(self, path, size):
        if not self.out.tty:
            self.out.line("wrote %s (%d bytes)" % (path, size))

    def removed(self, path):
        self.out.line("removed %s" % path)

    def finish(self):
        self.out.end()


class RolloutProgress:
    """What `edgefleet deploy` shows: the bytes sent, the wave and the nodes confirmed; off a
    terminal, a line at each quarter and at every change of status."""

    def __init__(self, stream=None, tty=None):
        self.out = ProgressLine(stream, tty)
        self.last = None

    def __call__(self, p):
        share = p["bytes"] / p["bytes_total"] if p["bytes_total"] else 1.0
        text = "%s  wave %d/%d  confirmed %d/%d  %s" % (
            bar(share), max(p["wave"], 1), p["waves"], p["confirmed"], p["nodes"], p["status"])
        if text == self.last:
            return
        self.last = text
        if self.out.tty:
            self.out.draw(text)
            if p["status"] not in ("running", "rolling_back"):
                self.out.end()
        elif p["status"] != "running" or int(100 * share) % 25 == 0:
            self.out.line(text)
