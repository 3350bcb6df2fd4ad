"""Loopback serving conventions shared by the test peers.

A peer binds 127.0.0.1 on a port the OS assigns, prints exactly one line
``LISTENING <port>`` to stdout once the socket is bound, and serves until it
is killed or its stdin reaches end of file. The stdin rule means a test
process that dies without cleaning up still stops its peers, because the
kernel closes the pipe that fed their stdin.

Run by hand, keep stdin open, for example ``sleep infinity | python3 PEER``.
"""

import sys
import threading

from werkzeug.serving import BaseWSGIServer, make_server

LOOPBACK_HOST = "127.0.0.1"


def serve_until_stdin_closes(app) -> None:
    """Serve a WSGI app on a loopback port chosen by the OS until stdin closes."""
    server = make_server(LOOPBACK_HOST, 0, app, threaded=True)
    print(f"LISTENING {server.port}", flush=True)

    watcher = threading.Thread(
        target=_shut_down_at_stdin_eof,
        args=(server,),
        name="stdin-eof-watcher",
        daemon=True,
    )
    watcher.start()
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _shut_down_at_stdin_eof(server: BaseWSGIServer) -> None:
    # read() returns only at end of file, so the data itself is ignored.
    sys.stdin.buffer.read()
    print("stdin closed, stopping the server", file=sys.stderr, flush=True)
    # shutdown() makes serve_forever() return in the main thread. Request
    # threads are daemon threads, so an open stream does not keep the process.
    server.shutdown()
