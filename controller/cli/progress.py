"""What `edgefleet flash` shows while it writes: a one-line progress bar on a terminal, one line
per file otherwise (a CI log, a pipe), so that a log never fills with carriage returns."""
import sys

from ..install.flasher import Progress

BAR_WIDTH = 30


class FlashProgress(Progress):
    def __init__(self, stream=None, tty=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = 0
        self.done = 0
        self._drawn = False

    def start(self, files, total_bytes):
        self.total = total_bytes
        self.done = 0
        if not self.tty:
            self._line("sending %d files (%.1f KB)" % (files, total_bytes / 1024.0))

    def advance(self, path, nbytes):
        self.done += nbytes
        if self.tty:
            share = self.done / float(self.total) if self.total else 1.0
            filled = int(share * BAR_WIDTH)
            self.stream.write("\r[%s%s] %3d%% %7.1f/%.1f KB  %-40.40s" % (
                "#" * filled, "." * (BAR_WIDTH - filled), int(share * 100), self.done / 1024.0,
                self.total / 1024.0, path))
            self.stream.flush()
            self._drawn = True

    def file_done(self, path, size):
        if not self.tty:
            self._line("wrote %s (%d bytes)" % (path, size))

    def removed(self, path):
        self._line("removed %s" % path)

    def finish(self):
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _line(self, text):
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
