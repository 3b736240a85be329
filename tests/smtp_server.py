#!/usr/bin/python3
"""SMTP server for tests/email.rs: Debian's aiosmtpd on 127.0.0.1, optionally
requiring STARTTLS (or speaking TLS from the first byte, --implicit) and AUTH. Each message received becomes one JSON line in
--out. Prints "ready" once listening and stops when stdin closes."""
import argparse
import json
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Recorder:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            # session.ssl covers STARTTLS; implicit TLS shows on the transport.
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok)

    return check


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--implicit", action="store_true")
    a = p.parse_args()
    options = {}
    controller_options = {}
    if a.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
        if a.implicit:
            controller_options["ssl_context"] = context
        else:
            options.update(tls_context=context, require_starttls=True)
    if a.user:
        options.update(
            authenticator=authenticator(a.user, a.password),
            auth_required=True,
            auth_require_tls=bool(a.cert),
        )
    controller = Controller(
        Recorder(a.out), hostname="127.0.0.1", port=a.port, **controller_options, **options
    )
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
