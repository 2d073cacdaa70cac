"""Assertions and a free port, shared by python_client_test.py and the
checks it runs (python_client_checks.py)."""

import socket


def expect_error(cls, fn, *a, **kw):
    """Runs fn and returns the error it raised, which must be exactly a `cls`."""
    try:
        r = fn(*a, **kw)
        if hasattr(r, "__next__"):  # a stream: errors come from the iteration
            list(r)
    except Exception as e:  # noqa: BLE001
        if type(e) is not cls:
            raise AssertionError("expected %s, got %s: %s" % (cls.__name__, type(e).__name__, e)) from e
        return e
    raise AssertionError("expected %s, the call succeeded" % cls.__name__)


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
