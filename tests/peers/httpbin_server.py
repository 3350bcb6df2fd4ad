"""Serve the real httpbin app on loopback for the gateway's end-to-end tests.

Prints ``LISTENING <port>`` once bound and stops when stdin closes (see
peer_server.py).
"""

from httpbin import app

from peer_server import serve_until_stdin_closes

if __name__ == "__main__":
    serve_until_stdin_closes(app)
