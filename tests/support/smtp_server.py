#!/usr/bin/env python3
"""A real SMTP server for ferry's mail connector tests, built on aiosmtpd.

It listens on 127.0.0.1 (port 0 by default: the OS picks one), prints
``PORT <n>`` on stdout once it accepts connections, and stores every message
it accepts as ``<dir>/msg-<n>.json``::

    {"mail_from": "...", "rcpt_tos": ["..."], "data": "<raw message>",
     "auth_login": "<user or null>", "tls": true|false}

Options:

* ``--user U --password P``: offer AUTH PLAIN/LOGIN (also over plain TCP, which
  is fine on 127.0.0.1) and require it before MAIL FROM.
* ``--cert C --key K``: offer STARTTLS with that certificate (and require it).
* ``--implicit-tls``: with ``--cert``/``--key``, speak TLS from the first byte
  instead (SMTPS).

Recipients whose local part starts with ``reject`` are refused with a permanent
``550``; those starting with ``defer`` with a transient ``451``.

It also keeps ``<dir>/connections.txt`` holding the number of connections accepted so
far. It runs until killed (the tests kill it when they end).
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Store:
    """Saves accepted messages as JSON files, written atomically."""

    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.connections = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        if local.startswith("defer"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        login = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        transport = server.transport
        tls_transport = (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "auth_login": login,
            "tls": session.ssl is not None or tls_transport,
        }
        final = os.path.join(self.directory, "msg-%d.json" % self.count)
        temp = final + ".part"
        with open(temp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(temp, final)
        return "250 Message accepted for delivery"


def make_authenticator(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        # handled=False: on failure aiosmtpd itself answers 535.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="where accepted messages are stored")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--implicit-tls", action="store_true")
    args = parser.parse_args()
    # AUTH without TLS is deliberate here (127.0.0.1 only); keep stderr quiet.
    warnings.simplefilter("ignore")
    # Refused handshakes are expected in the tests; their tracebacks are noise.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    os.makedirs(args.dir, exist_ok=True)
    store = Store(args.dir)

    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    kwargs = {"hostname": "localhost", "auth_require_tls": False}
    if args.user:
        kwargs["authenticator"] = make_authenticator(args.user, args.password or "")
        kwargs["auth_required"] = True
    if context is not None and not args.implicit_tls:
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = True

    loop = asyncio.get_running_loop()
    def session():
        # Counts connections, so tests can tell how many attempts reached the server.
        store.connections += 1
        counter = os.path.join(args.dir, "connections.txt")
        with open(counter + ".part", "w", encoding="utf-8") as f:
            f.write("%d\n" % store.connections)
        os.replace(counter + ".part", counter)
        return SMTP(store, loop=loop, **kwargs)

    server = await loop.create_server(
        session,
        host="127.0.0.1",
        port=args.port,
        ssl=context if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
