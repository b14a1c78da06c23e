# A bottle app that leaks on purpose, for the tests of captures: the leaks are opened by
# helpers in this module, below the route, under a sub-app mounted at /shop/.
#
#   GET /shop/receipt   receipt() → load_receipt() → open_receipt(): keeps static/cat.jpg open
#   GET /shop/mixed     reads static/cat.jpg and closes it (peek_cat), then leaks it as
#                       /shop/receipt does
#   GET /shop/connect   connects to $PEER (HOST:PORT) and keeps the connection
#   GET /shop/peek      reads static/cat.jpg and closes it (no leak: for the benchmark)
#   GET /shop/pooled    leaks as /shop/receipt does, on a thread of a pool started by the
#                       first such request (needs `enable-threads`)
#   GET /               leaks nothing
# HOLD_AT_IMPORT=N opens static/config.db N times at import (in the master, inherited by
# the workers) and holds them: many fds of one target that is not the leak.
import concurrent.futures
import os
import socket

import bottle

HERE = os.path.dirname(os.path.abspath(__file__))
CAT = os.path.join(HERE, "static", "cat.jpg")
KEPT = []
HELD = [open(os.path.join(HERE, "static", "config.db"), "rb")
        for _ in range(int(os.environ.get("HOLD_AT_IMPORT", "0")))]


def open_receipt():
    f = open(CAT, "rb")  # leak site
    KEPT.append(f)
    return f


def load_receipt():
    return open_receipt()


def peek_cat():
    with open(CAT, "rb") as f:  # closed site
        return f.read(2)


def connect_upstream():
    host, port = os.environ["PEER"].rsplit(":", 1)
    s = socket.create_connection((host, int(port)))  # connect site
    KEPT.append(s)
    return s


shop = bottle.Bottle()


@shop.route("/receipt")
def receipt():
    load_receipt()
    return "%d %d 0\n" % (os.getpid(), len(KEPT))


@shop.route("/mixed")
def mixed():
    peek_cat()
    load_receipt()
    return "%d %d 0\n" % (os.getpid(), len(KEPT))


@shop.route("/peek")
def peek():
    peek_cat()
    return "%d %d 0\n" % (os.getpid(), len(KEPT))


POOL = []


@shop.route("/pooled")
def pooled():
    if not POOL:
        POOL.append(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    POOL[0].submit(open_receipt).result()
    return "%d %d 0\n" % (os.getpid(), len(KEPT))


@shop.route("/connect")
def connect():
    connect_upstream()
    return "%d %d 0\n" % (os.getpid(), len(KEPT))


root = bottle.Bottle()
root.mount("/shop/", shop)


@root.route("/")
def index():
    return "%d %d 0\n" % (os.getpid(), len(KEPT))


application = root
