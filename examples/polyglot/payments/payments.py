#!/usr/bin/env python3
"""payments: a sagaflow participant over HTTP, in Python with nothing but the standard library.

sagaflow calls it because the server runs with `--service payments=http://127.0.0.1:8701`:
each command `payments.NAME` of a saga is POSTed to `/NAME` with the command payload as the
JSON body and the command's idempotency key in the `Idempotency-Key` header. What the answer
means (crates/http/src/answer.rs):

    2xx + JSON body   succeeded; the body is the step's output (merged into the context)
    409, 422          rejected: the saga compensates (the reason is problem+json `detail`)
    429, 5xx          a failure sagaflow retries (not before `Retry-After`)
    other 4xx         a failure that retrying cannot fix

Commands: POST /charge (the `charge` step's action) and POST /refund (its compensation).
GET /effects lists what was done, for the example's test; GET /healthz answers "ok".

Exactly once, across retries, redeliveries and crashes:
- `answers(key, status, body)`: every answer, by idempotency key. The same key again gets
  the recorded answer, byte for byte, and does nothing else.
- `effects(saga_id, step, phase, ...)`, UNIQUE(saga_id, step, phase): a charge or a refund
  happens at most once per saga step, whatever the attempt. A retry is a new attempt with a
  new key (an attempt that failed or timed out may still have landed), so the key alone is not
  enough: a new key for a step already charged answers with that charge.
- The effect and the answer are committed in one SQLite transaction, before the answer goes
  out: a crash after the commit loses nothing, and a crash before it leaves nothing.

Environment: PAYMENTS_PORT (default 8701), PAYMENTS_DB (default ./payments.db),
PAYMENTS_HOST (default 127.0.0.1).

For the crash test: a charge whose saga context has `"slow_charge": true` commits its effect,
then sleeps 120 s before answering, so the process can be killed mid-step. The command comes
again after the restart (a new attempt, or the same key) and finds the charge done.
"""

import json
import os
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LIMIT = 1000
SLOW_CHARGE_SECONDS = 120
MAX_BODY = 1024 * 1024

DB_PATH = os.environ.get("PAYMENTS_DB", "payments.db")

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key    TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    body   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    saga_id     TEXT NOT NULL,
    step        TEXT NOT NULL,
    phase       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount      NUMERIC NOT NULL,
    key         TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    UNIQUE (saga_id, step, phase)
);
"""


def connect():
    """A connection of one request's own; autocommit, transactions opened by hand."""
    db = sqlite3.connect(DB_PATH, timeout=30, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    # FULL: a committed transaction is on disk before the answer goes out (SIGKILL-proof;
    # in WAL mode NORMAL could lose the last commits on a power cut).
    db.execute("PRAGMA synchronous = FULL")
    return db


def prepare():
    db = connect()
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA)
    db.close()


def problem(status, title, detail):
    return status, {"type": "about:blank", "title": title, "status": status, "detail": detail}


def content_type(status):
    return "application/problem+json" if status >= 400 else "application/json"


class Refusal(Exception):
    """A request that is not a command this service takes (answered 400: not retried)."""


def read_command(handler):
    length = handler.headers.get("Content-Length")
    if length is None:
        raise Refusal("a command needs a Content-Length")
    try:
        length = int(length)
    except ValueError:
        raise Refusal("Content-Length is not a number")
    if length < 0 or length > MAX_BODY:
        raise Refusal(f"a command body is at most {MAX_BODY} bytes")
    raw = handler.rfile.read(length)
    try:
        payload = json.loads(raw)
    except ValueError as e:
        raise Refusal(f"the body is not JSON: {e}")
    if not isinstance(payload, dict):
        raise Refusal("the body is not a command payload (a JSON object)")
    for field, kind in (
        ("saga_id", str),
        ("step_name", str),
        ("phase", str),
        ("key", str),
        ("context", dict),
    ):
        if not isinstance(payload.get(field), kind):
            raise Refusal(f"the command payload has no {field} of type {kind.__name__}")
    header_key = handler.headers.get("Idempotency-Key")
    if header_key is not None and header_key != payload["key"]:
        raise Refusal("the Idempotency-Key header and the payload's key differ")
    return payload


def charge_output(saga_id, amount):
    return {"payment_id": f"pay-{saga_id}", "charged": amount}


def find_effect(db, saga_id, step, phase):
    return db.execute(
        "SELECT kind, amount FROM effects WHERE saga_id = ? AND step = ? AND phase = ?",
        (saga_id, step, phase),
    ).fetchone()


def decide_charge(db, payload):
    """Returns (status, body, charged_now) for a charge key not seen before."""
    saga_id, step = payload["saga_id"], payload["step_name"]
    if payload["phase"] != "action":
        return problem(400, "Wrong phase", "charge is the action of a step") + (False,)
    done = find_effect(db, saga_id, step, "action")
    if done is not None:
        # Charged by an earlier attempt (one that failed, timed out, or died with us).
        return 200, charge_output(saga_id, done[1]), False
    if find_effect(db, saga_id, step, "compensation") is not None:
        # The step was refunded already: a late attempt must not charge after the refund.
        return problem(409, "Already refunded", f"saga {saga_id} step {step} was refunded") + (False,)
    amount = payload["context"].get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
        return problem(422, "No amount", "the saga context has no non-negative number `amount`") + (False,)
    if amount > LIMIT:
        return problem(
            422, "Payment declined", f"amount {amount} exceeds the limit of {LIMIT}"
        ) + (False,)
    db.execute(
        "INSERT INTO effects (saga_id, step, phase, kind, amount, key, recorded_at)"
        " VALUES (?, ?, 'action', 'charge', ?, ?, ?)",
        (saga_id, step, amount, payload["key"], now_ms()),
    )
    return 200, charge_output(saga_id, amount), True


def decide_refund(db, payload):
    """Returns (status, body, False) for a refund key not seen before."""
    saga_id, step = payload["saga_id"], payload["step_name"]
    if payload["phase"] != "compensation":
        return problem(400, "Wrong phase", "refund is the compensation of a step") + (False,)
    done = find_effect(db, saga_id, step, "compensation")
    if done is not None:
        return 200, {"refunded": done[1]}, False
    charged = find_effect(db, saga_id, step, "action")
    # Nothing charged (the charge was declined, or never arrived): the refund of nothing is
    # recorded all the same, so a charge arriving late is refused rather than kept.
    amount = charged[1] if charged is not None else 0
    db.execute(
        "INSERT INTO effects (saga_id, step, phase, kind, amount, key, recorded_at)"
        " VALUES (?, ?, 'compensation', 'refund', ?, ?, ?)",
        (saga_id, step, amount, payload["key"], now_ms()),
    )
    return 200, {"refunded": amount}, False


COMMANDS = {"/charge": decide_charge, "/refund": decide_refund}


def now_ms():
    return int(time.time() * 1000)


def handle_command(decide, payload):
    """Answers one command exactly once per key; returns (status, body text, charged_now)."""
    db = connect()
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT status, body FROM answers WHERE key = ?", (payload["key"],)
            ).fetchone()
            if row is not None:
                db.execute("ROLLBACK")
                return row[0], row[1], False
            status, body, charged_now = decide(db, payload)
            text = json.dumps(body)
            db.execute(
                "INSERT INTO answers (key, status, body) VALUES (?, ?, ?)",
                (payload["key"], status, text),
            )
            db.execute("COMMIT")
            return status, text, charged_now
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def list_effects(saga_id):
    db = connect()
    try:
        query = (
            "SELECT rowid, saga_id, step, phase, kind, amount, key, recorded_at FROM effects"
        )
        args = ()
        if saga_id is not None:
            query += " WHERE saga_id = ?"
            args = (saga_id,)
        rows = db.execute(query + " ORDER BY rowid", args).fetchall()
    finally:
        db.close()
    return [
        {
            "seq": r[0],
            "saga_id": r[1],
            "step": r[2],
            "phase": r[3],
            "kind": r[4],
            "amount": r[5],
            "key": r[6],
            "recorded_at": r[7],
        }
        for r in rows
    ]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sagaflow-polyglot-payments"

    def answer(self, status, text, ctype=None):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype or content_type(status))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        decide = COMMANDS.get(urlsplit(self.path).path)
        if decide is None:
            # Read the body anyway, so the kept-alive connection stays in step.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body = problem(404, "No such command", f"payments has no {self.path}")
            return self.answer(status, json.dumps(body))
        try:
            payload = read_command(self)
        except Refusal as e:
            status, body = problem(400, "Not a command", str(e))
            self.close_connection = True
            return self.answer(status, json.dumps(body))
        try:
            status, text, charged_now = handle_command(decide, payload)
        except sqlite3.Error as e:
            # The database is busy or broken: a failure sagaflow retries.
            status, body = problem(503, "Database unavailable", str(e))
            return self.answer(status, json.dumps(body))
        log(f"{self.path[1:]} {payload['key']} -> {status} {text}")
        if charged_now and payload["context"].get("slow_charge") is True:
            log(f"slow_charge: charged {payload['key']}, answering in {SLOW_CHARGE_SECONDS} s")
            time.sleep(SLOW_CHARGE_SECONDS)
        self.answer(status, text)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/effects":
            saga_id = parse_qs(url.query).get("saga_id", [None])[0]
            return self.answer(200, json.dumps(list_effects(saga_id)), "application/json")
        if url.path == "/healthz":
            return self.answer(200, "ok\n", "text/plain")
        status, body = problem(404, "Not found", f"nothing at {url.path}")
        self.answer(status, json.dumps(body))

    def log_message(self, format, *args):
        # Commands are logged by do_POST; the test polls GET /effects, which stays quiet.
        pass


_log_lock = threading.Lock()


def log(line):
    with _log_lock:
        print(f"payments: {line}", file=sys.stderr, flush=True)


def main():
    port = int(os.environ.get("PAYMENTS_PORT", "8701"))
    host = os.environ.get("PAYMENTS_HOST", "127.0.0.1")
    prepare()
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"payments listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
