# A WSGI app that leaks file descriptors on purpose, for vassal-warden's tests and demo.
#
#   GET /leak        opens static/cat.jpg and never closes it
#   GET /            leaks nothing
#   ?ms=N            (either path) takes N ms to answer, as a request that does some work
# Every response is "PID LEAKED INHERITED": the worker's PID, how many files this process
# has leaked, and how many it holds from import time.
# OPEN_AT_IMPORT=N (environment) opens N files at import time, i.e. in the uWSGI master
# when the app is not loaded lazily, so that workers inherit them.
# MASTER_LEAK_PER_SEC=N starts a thread at import time, in the master, that opens N files
# a second from a second later (once the workers are forked), up to MASTER_LEAK_UPTO files
# (default 500; needs `enable-threads`); with
# MASTER_LEAK_ONCE=PATH, only in the first life of the master (PATH marks that it
# happened), so a reload cures it.
# LEAK_WORKER=N makes /leak leak only in uWSGI worker N; other workers answer normally.
#   GET /stuck       in worker LEAK_WORKER only: opens 45 files, then hangs for 120 s
#                    (a worker stuck in a request; elsewhere it answers at once)
import os
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "static", "cat.jpg")
IMPORTED = [open(os.path.join(HERE, "static", "config.db"), "rb")
            for _ in range(int(os.environ.get("OPEN_AT_IMPORT", "0")))]
LEAKED = []
MASTER_LEAKED = []


def _leak_in_master(per_sec, upto):
    # Not while uWSGI forks the workers, right after the import: a fork while this thread
    # is inside the interpreter can leave a worker that never exits (it holds up a
    # graceful reload for the whole reload-mercy).
    time.sleep(1.0)
    while len(MASTER_LEAKED) < upto:
        MASTER_LEAKED.append(open(os.path.join(HERE, "static", "config.db"), "rb"))
        time.sleep(1.0 / per_sec)


_once = os.environ.get("MASTER_LEAK_ONCE")
if int(os.environ.get("MASTER_LEAK_PER_SEC", "0")) > 0 and not (_once and os.path.exists(_once)):
    if _once:
        open(_once, "w").close()
    threading.Thread(target=_leak_in_master, args=(int(os.environ["MASTER_LEAK_PER_SEC"]),
                                                 int(os.environ.get("MASTER_LEAK_UPTO", "500"))),
                     daemon=True).start()


def _worker_id():
    try:
        import uwsgi
        return uwsgi.worker_id()
    except ImportError:
        return 0


def application(environ, start_response):
    only = int(os.environ.get("LEAK_WORKER", "0"))
    mine = only == 0 or only == _worker_id()
    if environ.get("PATH_INFO") == "/leak" and mine:
        LEAKED.append(open(TARGET, "rb"))
    query = environ.get("QUERY_STRING", "")
    if query.startswith("ms="):
        time.sleep(int(query[3:]) / 1000.0)
    if environ.get("PATH_INFO") == "/stuck" and only == _worker_id():
        LEAKED.extend(open(TARGET, "rb") for _ in range(45))
        time.sleep(120)
    body = "%d %d %d\n" % (os.getpid(), len(LEAKED), len(IMPORTED))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
