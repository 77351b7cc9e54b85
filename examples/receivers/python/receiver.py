"""A minimal receiver for botwire's event webhooks, verified with the
Standard Webhooks library for Python.

    pip install -r requirements.txt
    WEBHOOK_SECRET=whsec_... python3 receiver.py [PORT]

Each verified delivery prints one JSON line ({"verified": true, "id",
"type"}) and is answered 204; a request whose signature does not verify
prints {"verified": false, "error"} and is answered 401, so botwire retries
it. The body is read as raw bytes: the signature covers them exactly.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = os.environ.get("WEBHOOK_SECRET")
if not SECRET:
    sys.exit("set WEBHOOK_SECRET to the endpoint's signing secret (whsec_...)")
WEBHOOK = Webhook(SECRET)
# Requests are handled on threads: one line at a time, or two may interleave.
PRINT = threading.Lock()


def say(record):
    with PRINT:
        print(json.dumps(record), flush=True)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = WEBHOOK.verify(body, dict(self.headers))
        except WebhookVerificationError as err:
            say({"verified": False, "error": str(err)})
            self.send_response(401)
            self.end_headers()
            return
        say({"verified": True, "id": self.headers["webhook-id"], "type": event["type"]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9200
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
