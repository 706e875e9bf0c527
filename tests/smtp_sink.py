"""A loopback SMTP server for notification tests: accepts every message (no TLS, no
authentication) and keeps it, so a test can read what a notifier sent."""

from __future__ import annotations

import json
import socketserver
import threading
from email import message_from_bytes
from email.message import Message
from types import TracebackType


class SmtpSink:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 sink ESMTP\r\n")
                rcpt: list[str] = []
                while line := self.rfile.readline(65536):
                    verb = line.strip().split(b" ", 1)[0].upper()
                    if verb == b"EHLO":
                        self.wfile.write(b"250-sink\r\n250 SIZE 10240000\r\n")
                    elif verb == b"RCPT":
                        rcpt.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                        self.wfile.write(b"250 OK\r\n")
                    elif verb == b"DATA":
                        self.wfile.write(b"354 end with .\r\n")
                        body = b""
                        while (chunk := self.rfile.readline(65536)) not in (b".\r\n", b""):
                            body += chunk
                        sink.messages.append(message_from_bytes(body))
                        sink.recipients.append(rcpt)
                        rcpt = []
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:  # HELO, MAIL, RSET, NOOP
                        self.wfile.write(b"250 OK\r\n")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    def __enter__(self) -> SmtpSink:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def connection_uri(self) -> str:
        """An Airflow SMTP connection (JSON form) to this sink."""
        extra = {"from_email": "policylake@example.test", "disable_ssl": True, "disable_tls": True}
        return json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra}
        )
