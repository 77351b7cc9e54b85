// A minimal receiver for botwire's event webhooks, verified with the
// Standard Webhooks library for JavaScript.
//
//   WEBHOOK_SECRET=whsec_... node receiver.js [PORT]
//
// Each verified delivery prints one JSON line ({"verified": true, "id",
// "type"}) and is answered 204; a request whose signature does not verify
// prints {"verified": false, "error"} and is answered 401, so botwire
// retries it. Read the body as raw bytes: the signature covers them exactly.
import http from "node:http";
import { Webhook } from "standardwebhooks";

const secret = process.env.WEBHOOK_SECRET;
if (!secret) {
  console.error("set WEBHOOK_SECRET to the endpoint's signing secret (whsec_...)");
  process.exit(2);
}
const webhook = new Webhook(secret);
const port = Number(process.argv[2] || 9100);

const server = http.createServer((req, res) => {
  if (req.method !== "POST") {
    res.writeHead(405, { allow: "POST" }).end();
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    try {
      const event = webhook.verify(body, req.headers);
      console.log(JSON.stringify({ verified: true, id: req.headers["webhook-id"], type: event.type }));
      res.writeHead(204).end();
    } catch (err) {
      console.log(JSON.stringify({ verified: false, error: String(err.message || err) }));
      res.writeHead(401, { "content-type": "text/plain" }).end("signature does not verify\n");
    }
  });
});
server.listen(port, "127.0.0.1", () => console.error(`listening on 127.0.0.1:${port}`));
