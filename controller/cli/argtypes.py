"""argparse `type=` checks for numbers with a range: a value out of range is a usage error
(exit status 2, argparse's own message naming the option), caught before the command runs."""
import argparse


def _number(kind, text, low, low_inclusive, high=None):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not %s" % (text, "an integer" if kind is int else "a number")) from None
    if value != value or (value < low if low_inclusive else value <= low) or (high is not None and value > high):
        bound = "%s %s" % (">=" if low_inclusive else ">", low)
        if high is not None:
            bound = "from %s to %s" % (low, high)
        raise argparse.ArgumentTypeError("%s must be %s" % (text, bound))
    return value


def positive_int(text):
    return _number(int, text, 0, False)


def non_negative_int(text):
    return _number(int, text, 0, True)


def positive_float(text):
    return _number(float, text, 0, False)


def non_negative_float(text):
    return _number(float, text, 0, True)


def port_number(text):
    return _number(int, text, 1, True, 65535)
