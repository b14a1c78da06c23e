# A WSGI app that leaks file descriptors on purpose, for vassal-warden's tests and demo.
#
#   GET /leak        opens static/cat.jpg and never closes it
#   GET /            leaks nothing
# Every response is "PID LEAKED INHERITED": the worker's PID, how many files this process
# has leaked, and how many it holds from import time.
# OPEN_AT_IMPORT=N (environment) opens N files at import time, i.e. in the uWSGI master
# when the app is not loaded lazily, so that workers inherit them.
import os

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "static", "cat.jpg")
IMPORTED = [open(os.path.join(HERE, "static", "config.db"), "rb")
            for _ in range(int(os.environ.get("OPEN_AT_IMPORT", "0")))]
LEAKED = []


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/leak":
        LEAKED.append(open(TARGET, "rb"))
    body = "%d %d %d\n" % (os.getpid(), len(LEAKED), len(IMPORTED))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
