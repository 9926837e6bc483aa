// A stock Node `ws` echo server on 127.0.0.1, started by tests/doctor/test_doctor_third_party.py.
// argv[2]: JSON options for WebSocketServer (e.g. {"maxPayload": 65536, "autoPong": false}).
// Prints {"port": N} on its first stdout line once it listens; exits when stdin closes.
import { WebSocketServer } from "ws";

const options = JSON.parse(process.argv[2] || "{}");
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, ...options });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", () => {});
});
wss.on("listening", () => {
  process.stdout.write(JSON.stringify({ port: wss.address().port }) + "\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
