# Holds a known set of file descriptors open until its stdin closes, for vassal-warden's
# forensics tests and benchmarks.
#
#   holder.py [--files N PATH] [--deleted PATH] [--tcp N HOST:PORT] [--unix N PATH] [--unixpair N]
#             [--pipe N] [--eventfd N] [--epoll N]
#
# Prints "ready" once everything is open. Then each line on stdin "files N PATH" opens N
# more and answers "ok". EOF on stdin ends it.
import os
import resource
import select
import socket
import sys

# Start from a known state: nothing but stdin, stdout and stderr, whatever the parent
# leaked into this process.
os.closerange(3, 65536)

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

held = []
args = sys.argv[1:]


def files(n, path):
    for _ in range(n):
        held.append(open(path, "rb"))


i = 0
while i < len(args):
    a = args[i]
    if a == "--files":
        files(int(args[i + 1]), args[i + 2])
        i += 3
    elif a == "--deleted":
        held.append(open(args[i + 1], "rb"))
        os.unlink(args[i + 1])
        i += 2
    elif a == "--tcp":
        host, port = args[i + 2].rsplit(":", 1)
        for _ in range(int(args[i + 1])):
            held.append(socket.create_connection((host, int(port))))
        i += 3
    elif a == "--unix":
        for _ in range(int(args[i + 1])):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(args[i + 2])
            held.append(c)
        i += 3
    elif a == "--unixpair":
        for _ in range(int(args[i + 1])):
            held.extend(socket.socketpair())
        i += 2
    elif a == "--pipe":
        for _ in range(int(args[i + 1])):
            held.extend(os.pipe())
        i += 2
    elif a == "--eventfd":
        for _ in range(int(args[i + 1])):
            held.append(os.eventfd(0))
        i += 2
    elif a == "--epoll":
        for _ in range(int(args[i + 1])):
            held.append(select.epoll())
        i += 2
    else:
        sys.exit("unknown argument " + a)

print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words and words[0] == "files":
        files(int(words[1]), words[2])
        print("ok", flush=True)
