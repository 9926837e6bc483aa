// The exactly-once scenario shared by Node (exactly_once.mjs) and Chromium (page.html).
// The Python test starts the server, sends the server's messages and cuts connections.
//
// run() connects, reports {event: 'ready'}, sends cfg.n messages (the first half at
// once, the second half after half of the cfg.m server messages arrived), waits until
// every send settled and cfg.m messages arrived, and returns what happened.

export function clientPayload(i) {
  if (i === 5) return { i, blob: 'x'.repeat(70000) }; // compressed (z=1) by the client
  if (i % 25 === 7) return { i, text: `😀é"\\${i}`.repeat(60) }; // chunked, astral chars at slice edges
  return { i, text: `m${i}` };
}

export async function run(Client, WebSocket, cfg, report) {
  const received = [];
  const errors = [];
  const half = Math.floor(cfg.m / 2);
  let openGate;
  let allReceived;
  const gate = new Promise((resolve) => { openGate = resolve; });
  const everything = new Promise((resolve) => { allReceived = resolve; });
  if (half === 0) openGate();
  if (cfg.m === 0) allReceived();
  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), cfg.timeoutMs); });
  const states = [];

  const client = new Client(cfg.url, {
    WebSocket,
    token: cfg.token,
    secret: cfg.secret ?? null,
    chunkSize: cfg.chunkSize ?? 300,
    heartbeat: true,
    backoff: { base: 20, cap: 200 },
    onmessage(payload) {
      received.push(payload);
      if (received.length === half) openGate();
      if (received.length === cfg.m) allReceived();
    },
    onerror(error) { errors.push(`${error.code}: ${error.message}`); },
    onstatechange(state) { if (states.length < 200) states.push(state); },
  });
  const finish = async (event) => {
    const result = {
      event,
      received,
      errors: errors.slice(0, 50),
      states,
      stats: client.stats,
      session: client.session,
      firstSession,
      readyState: client.readyState,
      pending: client.pending,
    };
    clearTimeout(timer);
    await client.close();
    result.closedState = client.readyState;
    return result;
  };

  let firstSession = null;
  if (await Promise.race([client.connect(), timeout]) === 'timeout') return finish('timeout: connect');
  firstSession = client.session;
  report({ event: 'ready', session: client.session, readyState: client.readyState, ready: client.ready });

  const sends = [];
  const outcomes = [];
  const send = (i) => sends.push(client.send(clientPayload(i)).then(
    (ack) => { outcomes[i] = { ok: true, renumbered: ack.renumbered }; },
    (err) => { outcomes[i] = { ok: false, code: err.code, message: err.message }; },
  ));
  for (let i = 0; i < Math.ceil(cfg.n / 2); i++) send(i);
  if (await Promise.race([gate, timeout]) === 'timeout') return { ...(await finish('timeout: half')), outcomes };
  for (let i = Math.ceil(cfg.n / 2); i < cfg.n; i++) send(i);
  if (await Promise.race([Promise.all(sends), timeout]) === 'timeout') {
    return { ...(await finish('timeout: acks')), outcomes };
  }
  if (await Promise.race([everything, timeout]) === 'timeout') {
    return { ...(await finish('timeout: receive')), outcomes };
  }
  return { ...(await finish('done')), outcomes };
}
