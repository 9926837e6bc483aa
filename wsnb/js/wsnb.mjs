// wsnb.mjs: a dependency-free JavaScript client of the wsnb wire protocol,
// revision 1.1 (see PROTOCOL.md). One ES module; copy it into a web app as is.
//
//   import { Client } from './wsnb.mjs';
//   const client = new Client('ws://127.0.0.1:8765', {
//     token: 'demo',
//     onmessage: (payload) => console.log('got', payload),
//   });
//   await client.connect();                 // resolves at READY (handshake_ack)
//   await client.send({ hello: 'world' });  // resolves when the server acked it
//
// In Node, pass the `ws` package's constructor:
//   import WebSocket from 'ws';
//   new Client(url, { WebSocket, token });
//
// What it guarantees (PROTOCOL.md, "Delivery guarantees"): while the session
// survives, each message is delivered exactly once and in order, both ways,
// across any number of dropped connections. If the server loses the session
// (`resumed: false`), un-acked messages are renumbered and resent: then
// delivery is at-least-once (`client.stats.renumbered` counts those resends).

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;

const VERSION = 1;
const MAX_INT = Number.MAX_SAFE_INTEGER; // 2^53 − 1: every integer on the wire fits
const FINAL_CLOSE_CODES = new Set([1000, 1008, 4401]); // never reconnect after these
const SKIPPED = Symbol('nacked'); // a refused id: consumed, never delivered
const FRAME_OVERHEAD = 256; // bytes a chunk frame adds around its slice, generously

const DEFAULTS = {
  token: null,
  secret: null,
  heartbeat: true, // false: no dead-link detection (the server's pings are still answered)
  backoff: { base: 500, cap: 30000 }, // milliseconds
  maxOutbox: 10000, // messages held (unsent or un-acked); send() refuses beyond
  chunkSize: 512 * 1024, // code points per msg frame before it goes as chunks
  compressMin: 64 * 1024, // compress payloads at least this long (null: never)
  maxMessage: 64 * 1024 * 1024, // UTF-8 bytes of one incoming message, joined or inflated
  maxHeld: 10000, // early ids held while waiting for a gap to fill
  ackDelay: 20, // ms; the protocol asks for an ack within 100 ms or every 64 messages
  handshakeTimeout: 10000, // ms from opening the socket to handshake_ack
  replayWindowMs: 300000, // with a secret: refuse messages stamped further from our clock
  onmessage: null, // (payload) => void, once per server message, in id order
  onstatechange: null, // (state, detail) => void
  onerror: null, // (error) => void: violations, dead links, server `error` frames...
};

/** An Error with a `code`: a nack's code ('bad_json', ...) or a close code (1000, 4401...). */
export class WsnbError extends Error {
  constructor(message, code, details = {}) {
    super(message);
    this.name = 'WsnbError';
    this.code = code;
    Object.assign(this, details);
  }
}

// ----- JSON Canonicalization Scheme (RFC 8785) ------------------------------

/**
 * The RFC 8785 canonical JSON text of a JSON value: object keys sorted by
 * UTF-16 code units, no whitespace, numbers as ECMAScript writes them
 * (JSON.stringify: 1e+21, 1e-7, -0 → 0), strings with minimal escaping
 * (JSON.stringify again). Refuses NaN, Infinity, lone surrogates and
 * anything JSON cannot carry.
 */
export function canonicalize(value) {
  if (value === null || typeof value === 'boolean') return String(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`JCS: ${value} is not valid JSON`);
    return JSON.stringify(value);
  }
  if (typeof value === 'string') {
    if (!isWellFormed(value)) throw new TypeError('JCS: string has a lone surrogate');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map((item) => canonicalize(item)).join(',')}]`;
  }
  if (typeof value === 'object' && Object.getPrototypeOf(value) !== Array.prototype) {
    if (typeof value.toJSON === 'function') return canonicalize(value.toJSON());
    const keys = Object.keys(value).filter((key) => isJsonValue(value[key])).sort();
    return `{${keys.map((key) => `${canonicalize(key)}:${canonicalize(value[key])}`).join(',')}}`;
  }
  throw new TypeError(`JCS: a ${typeof value} is not JSON`);
}

// JSON.stringify leaves object members holding these out; so does JCS here.
function isJsonValue(value) {
  return value !== undefined && typeof value !== 'function' && typeof value !== 'symbol';
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function isWellFormed(text) {
  return typeof text.isWellFormed === 'function' ? text.isWellFormed() : !LONE_SURROGATE.test(text);
}

// ----- small helpers --------------------------------------------------------

const encoder = new TextEncoder();
const now = () => (globalThis.performance ? performance.now() : Date.now());

function isHigh(code) { return code >= 0xd800 && code <= 0xdbff; }
function isLow(code) { return code >= 0xdc00 && code <= 0xdfff; }

/** UTF-8 byte length of a string without allocating the bytes. */
export function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (isHigh(c) && i + 1 < text.length && isLow(text.charCodeAt(i + 1))) { bytes += 4; i++; }
    else bytes += 3;
  }
  return bytes;
}

/**
 * Split `text` into slices of at most `limit` Unicode code points; a slice
 * never ends between the two halves of a surrogate pair.
 */
export function splitCodePoints(text, limit) {
  const slices = [];
  let start = 0;
  while (start < text.length) {
    let end = start;
    for (let count = 0; count < limit && end < text.length; count++) {
      const pair = isHigh(text.charCodeAt(end)) && end + 1 < text.length
        && isLow(text.charCodeAt(end + 1));
      end += pair ? 2 : 1;
    }
    slices.push(text.slice(start, end));
    start = end;
  }
  return slices;
}

function codePointLength(text) {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    if (isHigh(text.charCodeAt(i)) && i + 1 < text.length && isLow(text.charCodeAt(i + 1))) i++;
    count++;
  }
  return count;
}

function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

function toBase64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Compare two hex strings in time independent of where they differ.
function sameText(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** HMAC-SHA256 key for WebCrypto (`secret` is text, used as its UTF-8 bytes, or bytes). */
async function importKey(secret) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    throw new Error('signatures need WebCrypto (crypto.subtle): a secure context (https or localhost)');
  }
  const raw = typeof secret === 'string' ? encoder.encode(secret) : secret;
  return subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
}

/** Lowercase hex HMAC-SHA256 of the UTF-8 bytes of `text`; `secret` is text, bytes or a CryptoKey. */
export async function hmacHex(secret, text) {
  const key = typeof secret === 'string' || ArrayBuffer.isView(secret) ? await importKey(secret) : secret;
  return toHex(await crypto.subtle.sign('HMAC', key, encoder.encode(text)));
}

/** zlib (RFC 1950) compression of the UTF-8 of `text`, as base64 text. */
async function deflate(text) {
  const stream = new Blob([encoder.encode(text)]).stream()
    .pipeThrough(new CompressionStream('deflate'));
  return toBase64(new Uint8Array(await new Response(stream).arrayBuffer()));
}

/** The text inside base64 zlib data, refusing more than `maxBytes` of output. */
async function inflate(base64, maxBytes) {
  const stream = new Blob([fromBase64(base64)]).stream()
    .pipeThrough(new DecompressionStream('deflate'));
  const reader = stream.getReader();
  const parts = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new RangeError(`payload inflates past ${maxBytes} bytes`);
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) { bytes.set(part, offset); offset += part.length; }
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

// ----- reading frames -------------------------------------------------------

/** A complaint about a peer's frame; `id` set when it refuses one message (→ nack). */
class FrameError extends Error {
  constructor(code, reason, id = null) {
    super(reason);
    this.code = code;
    this.id = id;
  }
}

const INT_FIELDS = ['v', 'id', 'ts', 'z', 'upto', 'i', 'n', 'last_seen', 'last_acked',
  'heartbeat_ms', 'max_size'];

// Fields each frame type must carry (PROTOCOL.md, "Frames").
const REQUIRED = {
  handshake: {},
  handshake_ack: { v: 'int', session: 'string', resumed: 'boolean', last_acked: 'int',
    heartbeat_ms: 'int', max_size: 'int' },
  msg: { v: 'int', id: 'int', ts: 'int', z: 'int' },
  ack: {},
  nack: { id: 'int', code: 'string', reason: 'string' },
  chunk: { id: 'int', i: 'int', n: 'int', data: 'string' },
  ping: { ts: 'int' },
  pong: { ts: 'int' },
  error: { code: 'string', reason: 'string' },
};

/** The first key that occurs twice in the top level of `text`, a JSON object's text. */
function duplicateTopLevelKey(text) {
  const seen = new Set();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)); // "\u0061" and "a" are one key
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === '{' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

/** Parse and check one frame's text; throws FrameError with the code to answer with. */
export function parseFrame(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch (err) {
    throw new FrameError('bad_json', `not JSON: ${err.message}`);
  }
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    throw new FrameError('bad_envelope', 'a frame is a JSON object');
  }
  const messageId = (frame.type === 'msg' || frame.type === 'chunk')
    && Number.isSafeInteger(frame.id) && frame.id >= 1 ? frame.id : null;
  const duplicate = duplicateTopLevelKey(text);
  if (duplicate !== undefined) {
    throw new FrameError('bad_json', `duplicate key ${JSON.stringify(duplicate)}`, messageId);
  }
  if (typeof frame.type !== 'string') {
    throw new FrameError('bad_envelope', 'a frame needs a string field "type"');
  }
  const required = REQUIRED[frame.type];
  if (!required) throw new FrameError('unknown_type', `unknown frame type ${frame.type.slice(0, 40)}`);
  for (const field of INT_FIELDS) {
    const value = frame[field];
    if (typeof value === 'number' && !(Number.isSafeInteger(value) && value >= 0 && value <= MAX_INT)) {
      throw new FrameError('bad_envelope', `${field} must be an integer in [0, 2^53 − 1]`, messageId);
    }
  }
  for (const [field, kind] of Object.entries(required)) {
    const value = frame[field];
    const ok = kind === 'int' ? Number.isSafeInteger(value) : typeof value === kind;
    if (!ok) throw new FrameError('bad_envelope', `${frame.type} needs ${field} as ${kind}`, messageId);
  }
  if (frame.type === 'msg') {
    if (frame.v !== VERSION) throw new FrameError('version', `version ${frame.v} is not supported`, messageId);
    if (frame.id < 1) throw new FrameError('bad_envelope', 'msg id must be >= 1');
    if (frame.z !== 0 && frame.z !== 1) throw new FrameError('bad_envelope', 'msg z must be 0 or 1', messageId);
    if (!('d' in frame)) throw new FrameError('bad_envelope', 'msg needs "d"', messageId);
    if (frame.z === 1 && typeof frame.d !== 'string') {
      throw new FrameError('bad_envelope', 'compressed d must be base64 text', messageId);
    }
    if ('s' in frame && typeof frame.s !== 'string') {
      throw new FrameError('bad_envelope', 'msg s must be a string', messageId);
    }
  } else if (frame.type === 'ack') {
    if (!Number.isSafeInteger(frame.id) && !Number.isSafeInteger(frame.upto)) {
      throw new FrameError('bad_envelope', 'ack needs an integer id or upto');
    }
  } else if (frame.type === 'chunk') {
    if (frame.n < 2 || frame.i >= frame.n || frame.id < 1) {
      throw new FrameError('bad_envelope', 'chunk needs n >= 2, 0 <= i < n and id >= 1', messageId);
    }
  }
  return frame;
}

// ----- the client -----------------------------------------------------------

/**
 * A reliable client: an outbox while not READY, acks, resume after
 * reconnects, heartbeats, backoff, chunks, compression and signatures.
 *
 * States (`client.state`, reported to `onstatechange`): 'new', 'connecting'
 * (socket opening), 'handshaking' (handshake sent), 'ready', 'reconnecting'
 * (waiting out the backoff), 'closing', 'closed'. `readyState` maps them to
 * the browser's numbers: ready → OPEN (1), closing → CLOSING (2), closed →
 * CLOSED (3), everything else → CONNECTING (0).
 */
export class Client {
  /**
   * @param {string} url ws:// or wss:// URL of a wsnb server
   * @param {object} options see DEFAULTS above; also `WebSocket`, the
   *   constructor to use (default globalThis.WebSocket). Times are milliseconds.
   */
  constructor(url, options = {}) {
    const opts = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    this.url = url;
    this.token = opts.token;
    this.heartbeat = opts.heartbeat;
    this.backoff = opts.backoff;
    this.maxOutbox = opts.maxOutbox;
    this.chunkSize = opts.chunkSize;
    this.compressMin = opts.compressMin;
    this.maxMessage = opts.maxMessage;
    this.maxHeld = opts.maxHeld;
    this.ackDelay = opts.ackDelay;
    this.handshakeTimeout = opts.handshakeTimeout;
    this.replayWindowMs = opts.replayWindowMs;
    this.onmessage = opts.onmessage;
    this.onstatechange = opts.onstatechange;
    this.onerror = opts.onerror;
    this._WebSocket = opts.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('no WebSocket here: in Node, pass { WebSocket } from the "ws" package');
    }
    if (!(this.chunkSize >= 1)) throw new RangeError('chunkSize must be >= 1');
    if (!(this.backoff.base > 0 && this.backoff.cap >= this.backoff.base)) {
      throw new RangeError('backoff needs 0 < base <= cap');
    }
    this._key = opts.secret == null ? null : importKey(opts.secret);
    if (this._key) this._key.catch(() => {}); // reported when first used

    this.state = 'new';
    this.session = null; // the session id from handshake_ack
    this.resumed = false;
    this.heartbeatMs = 0; // the server's, from handshake_ack
    this.maxSize = 1 << 20; // the server's frame limit in bytes, from handshake_ack
    this.closeCode = null;
    this.closeReason = '';
    this.lastError = null;
    this.rttMs = null;
    this.stats = { sent: 0, written: 0, resent: 0, renumbered: 0, acked: 0, nacked: 0,
      received: 0, duplicates: 0, reconnects: 0 };

    // Sending: `_outbox` holds every message not yet acked, in id order. The
    // first `_written` of them were written on the current connection.
    this._outbox = [];
    this._written = 0;
    this._nextId = 1;
    this._highestWritten = 0; // highest id written to any connection of this session
    this._pumping = false;

    // Receiving: every id up to `_lastDelivered` went to onmessage; early ids wait in `_held`.
    this._lastDelivered = 0;
    this._held = new Map();
    this._ackedUpto = 0;
    this._ackAgain = false;
    this._ackTimer = null;

    this._conn = null; // { ws, lastReceived, partial, lastMsg, timers }
    this._attempt = 0;
    this._readySince = null;
    this._reconnectTimer = null;
    this._closeTimer = null;
    this._inbound = Promise.resolve(); // incoming frames are handled one after another
    this._connected = null;
    this._closed = null;
  }

  get readyState() {
    if (this.state === 'ready') return OPEN;
    if (this.state === 'closing') return CLOSING;
    if (this.state === 'closed') return CLOSED;
    return CONNECTING;
  }

  get ready() { return this.state === 'ready'; }

  /** Messages held: not written yet, or written and not acked. */
  get pending() { return this._outbox.length; }

  /** Open the connection; resolves at READY, rejects on a final close before it. */
  connect() {
    if (!this._connected) {
      this._connected = new Promise((resolve, reject) => {
        this._connectSettle = { resolve, reject };
      });
      this._connected.catch(() => {}); // the caller's await sees it; no unhandled noise
      if (this.state === 'closed') this._connectSettle.reject(new WsnbError('client is closed', 'closed'));
      else this._open();
    }
    return this._connected;
  }

  /**
   * Send `payload` (any JSON value). Resolves with `{id, resent, renumbered}`
   * when the server acked it; rejects with a WsnbError whose `code` is the
   * nack's code, or the close code of a final close.
   */
  send(payload) {
    if (this.state === 'closed' || this.state === 'closing') {
      return Promise.reject(new WsnbError('client is closed', this.closeCode ?? 'closed'));
    }
    if (this._outbox.length >= this.maxOutbox) {
      return Promise.reject(new WsnbError(`outbox full (${this.maxOutbox} messages)`, 'outbox_full'));
    }
    let text;
    try {
      text = JSON.stringify(payload); // throws on cycles and BigInt
      if (text === undefined) throw new TypeError(`a ${typeof payload} is not JSON`);
      // Signed messages carry canonical JSON, so what is signed is exactly what is sent.
      if (this._key) text = canonicalize(JSON.parse(text));
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this._outbox.push({ id: this._nextId++, text, d: null, z: 0, writes: 0,
        renumbered: false, resolve, reject });
      this.stats.sent++;
      this._pump();
    });
  }

  /**
   * Close for good: un-acked sends fail at once with `code`; resolves when
   * the socket is closed (after at most a second).
   */
  close(code = 1000, reason = '') {
    if (this._closed) return this._closed;
    this._closed = new Promise((resolve) => { this._closedResolve = resolve; });
    clearTimeout(this._reconnectTimer);
    this._failAll(new WsnbError(`client closed (${code})`, code));
    const conn = this._conn;
    if (!conn) {
      this._finish(code, reason);
    } else {
      this._setState('closing', { code, reason });
      try { conn.ws.close(code, reason); } catch { /* closes below */ }
      this._closeTimer = setTimeout(() => {
        if (typeof conn.ws.terminate === 'function') conn.ws.terminate();
        this._finish(code, reason);
      }, 1000);
    }
    return this._closed;
  }

  // ----- connection life ----------------------------------------------------

  _setState(state, detail = {}) {
    this.state = state;
    if (this.onstatechange) {
      try { this.onstatechange(state, detail); } catch (err) { this._report(err); }
    }
  }

  _report(error) {
    this.lastError = error;
    if (this.onerror) {
      try { this.onerror(error); } catch { /* the app's handler must not break us */ }
    }
  }

  _open() {
    this._setState('connecting', { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) { // a bad URL: nothing will ever work
      this._report(err);
      this._failAll(new WsnbError(`cannot open ${this.url}: ${err.message}`, 'bad_url'));
      this._finish(1006, err.message);
      return;
    }
    const conn = { ws, lastReceived: now(), partial: null, lastMsg: null, deadline: null,
      watchdog: null };
    this._conn = conn;
    ws.onopen = () => {
      if (conn !== this._conn) return;
      this._setState('handshaking');
      const features = ['chunk', 'upto'];
      if (typeof DecompressionStream === 'function') features.push('z');
      this._sendFrame(conn, { type: 'handshake', v: VERSION, token: this.token ?? null,
        session: this.session, last_seen: this._lastDelivered, features });
    };
    ws.onmessage = (event) => this._onSocketMessage(conn, event.data);
    ws.onerror = () => {}; // a close event follows with the code that matters
    ws.onclose = (event) => this._onSocketClose(conn, event.code, event.reason);
    if (typeof ws.on === 'function') {
      // Node's `ws` shows WebSocket-level ping/pong frames: they count as life too.
      // (A browser hides them; there, only whole messages count.)
      const touch = () => { conn.lastReceived = now(); };
      ws.on('ping', touch);
      ws.on('pong', touch);
    }
    conn.deadline = setTimeout(() => {
      if (conn === this._conn && this.state !== 'ready') {
        this._abandon(conn, `no handshake_ack within ${this.handshakeTimeout} ms`);
      }
    }, this.handshakeTimeout);
  }

  _onReady(conn, frame) {
    clearTimeout(conn.deadline);
    this._readySince = now();
    this._setState('ready', { session: this.session, resumed: this.resumed });
    if (this.heartbeat !== false && this.heartbeatMs > 0) this._watch(conn);
    if (this._connectSettle) this._connectSettle.resolve(this);
    this._pump();
  }

  /** Dead-link detection: nothing received for 2 × heartbeat + grace closes the link. */
  _watch(conn) {
    const bound = 2 * this.heartbeatMs + Math.max(250, this.heartbeatMs / 2);
    const check = () => {
      if (conn !== this._conn) return;
      const left = conn.lastReceived + bound - now();
      if (left <= 0) this._abandon(conn, `dead link: nothing received for ${bound} ms`);
      else conn.watchdog = setTimeout(check, left + 1);
    };
    conn.watchdog = setTimeout(check, bound);
  }

  /** Give up on a connection without waiting for a closing handshake; reconnect. */
  _abandon(conn, why) {
    this._report(new WsnbError(why, 1006));
    if (typeof conn.ws.terminate === 'function') conn.ws.terminate(); // Node's ws: drop TCP now
    else try { conn.ws.close(4000, why.slice(0, 100)); } catch { /* already closing */ }
    this._onSocketClose(conn, 1006, why);
  }

  /** A protocol violation by the server: close with 1002, report it, reconnect. */
  _violation(conn, why) {
    this._report(new WsnbError(`protocol violation: ${why}`, 1002));
    const reason = why.slice(0, 100);
    try {
      conn.ws.close(1002, reason);
    } catch { // browsers only let scripts send 1000 and 3000–4999
      try { conn.ws.close(4002, reason); } catch { /* already closing */ }
    }
    this._onSocketClose(conn, 1002, why);
  }

  _onSocketClose(conn, code, reason = '') {
    if (conn !== this._conn) return; // already given up on
    this._conn = null;
    clearTimeout(conn.deadline);
    clearTimeout(conn.watchdog);
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    this._written = 0; // everything un-acked is written again on the next connection
    this.closeCode = code;
    this.closeReason = reason;
    if (this._closed) { this._finish(code, reason); return; }
    if (FINAL_CLOSE_CODES.has(code)) {
      const what = code === 1000 ? 'closed by the server'
        : `refused: ${code === 4401 ? 'token refused' : 'policy violation (auth)'}`;
      this._failAll(new WsnbError(`${what} (${code} ${reason})`.trim(), code));
      this._finish(code, reason);
      return;
    }
    if (code === 1009 && conn.lastMsg) { // the message too big for the server: failed, not resent
      this._fail(conn.lastMsg, new WsnbError(`message too big for the server (1009 ${reason})`, 1009));
    }
    if (code === 1002) this._report(new WsnbError(`protocol error (1002 ${reason})`, 1002));
    this._scheduleReconnect(code, reason);
  }

  _scheduleReconnect(code, reason) {
    const { base, cap } = this.backoff;
    if (this._readySince !== null && now() - this._readySince >= cap) this._attempt = 0;
    this._readySince = null;
    let wait = Math.random() * Math.min(cap, base * 2 ** Math.min(this._attempt, 60));
    this._attempt++;
    if (code === 1013) wait = Math.max(wait, cap);
    if (code === 4429) {
      const hint = /retry after (\d+(?:\.\d+)?) s/.exec(reason || '');
      wait = Math.max(wait, hint ? Number(hint[1]) * 1000 : cap);
    }
    this.stats.reconnects++;
    this._setState('reconnecting', { code, reason, wait });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, wait);
  }

  _finish(code, reason) {
    if (this.state === 'closed') return;
    clearTimeout(this._closeTimer);
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._ackTimer);
    const conn = this._conn;
    if (conn) {
      this._conn = null;
      clearTimeout(conn.deadline);
      clearTimeout(conn.watchdog);
    }
    this.closeCode = code;
    this.closeReason = reason;
    if (this._connectSettle && this.state !== 'ready') {
      this._connectSettle.reject(new WsnbError(`closed before READY (${code} ${reason})`.trim(), code));
    }
    this._setState('closed', { code, reason });
    if (!this._closed) this._closed = Promise.resolve();
    if (this._closedResolve) this._closedResolve();
  }

  // ----- sending ------------------------------------------------------------

  _sendFrame(conn, frame) {
    try {
      conn.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    } catch (err) { // not open any more: the close event follows
      this._report(err);
    }
  }

  _failAll(error) {
    const all = this._outbox;
    this._outbox = [];
    this._written = 0;
    for (const out of all) out.reject(error);
  }

  _fail(out, error) {
    const index = this._outbox.indexOf(out);
    if (index < 0) return;
    this._outbox.splice(index, 1);
    if (index < this._written) this._written--;
    out.reject(error);
  }

  /** Write un-written messages in id order while READY; one pump at a time. */
  async _pump() {
    if (this._pumping) return;
    this._pumping = true;
    try {
      while (this.state === 'ready' && this._written < this._outbox.length) {
        const conn = this._conn;
        const out = this._outbox[this._written];
        let frames;
        try {
          frames = await this._framesFor(out);
        } catch (err) {
          this._fail(out, err);
          continue;
        }
        // Signing and compressing are async: the world may have changed meanwhile.
        if (conn !== this._conn || this.state !== 'ready' || this._outbox[this._written] !== out) continue;
        for (const frame of frames) conn.ws.send(frame);
        this._written++;
        out.writes++;
        conn.lastMsg = out;
        this._highestWritten = Math.max(this._highestWritten, out.id);
        this.stats.written++;
        if (out.writes > 1) this.stats.resent++;
      }
    } catch (err) { // the socket refused a write: its close event follows
      this._report(err);
    } finally {
      this._pumping = false;
    }
  }

  /** The frames that carry `out` now: one msg, or its chunks. Re-stamped and re-signed each time. */
  async _framesFor(out) {
    if (out.d === null) { // once per message: maybe compress
      out.d = out.text;
      if (this.compressMin != null && out.text.length >= this.compressMin
          && typeof CompressionStream === 'function') {
        const packed = JSON.stringify(await deflate(out.text));
        if (packed.length < out.text.length) { out.d = packed; out.z = 1; }
      }
    }
    const ts = Date.now();
    let text = msgText(out, ts, null);
    if (this._key) {
      const signature = await hmacHex(await this._key, `${this.session}\n${text}`);
      text = msgText(out, ts, signature);
    }
    const limit = Math.max(1, Math.min(this.chunkSize, Math.floor((this.maxSize - FRAME_OVERHEAD) / 4)));
    if (text.length <= limit || codePointLength(text) <= limit) return [text];
    const slices = splitCodePoints(text, limit);
    return slices.map((data, i) => JSON.stringify({ type: 'chunk', id: out.id, i, n: slices.length, data }));
  }

  // ----- receiving ----------------------------------------------------------

  _onSocketMessage(conn, data) {
    if (conn !== this._conn) return;
    conn.lastReceived = now();
    this._inbound = this._inbound
      .then(() => this._onFrame(conn, data))
      .catch((err) => this._report(err));
  }

  async _onFrame(conn, data) {
    if (conn !== this._conn) return; // a frame of a connection given up on
    if (typeof data !== 'string') {
      this._sendFrame(conn, { type: 'error', code: 'bad_envelope', reason: 'wsnb frames are text' });
      return;
    }
    let frame;
    try {
      frame = parseFrame(data);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this._complain(conn, err);
      return;
    }
    if (this.state !== 'ready' && !['handshake_ack', 'ping', 'error'].includes(frame.type)) {
      return; // nothing but the handshake's answer counts before READY
    }
    switch (frame.type) {
      case 'handshake_ack': this._onHandshakeAck(conn, frame); break;
      case 'msg': await this._onMsg(conn, frame); break;
      case 'chunk': await this._onChunk(conn, frame); break;
      case 'ack': this._onAck(conn, frame); break;
      case 'nack': this._onNack(frame); break;
      case 'ping': this._sendFrame(conn, { type: 'pong', ts: frame.ts }); break;
      case 'pong': this.rttMs = Math.max(0, Date.now() - frame.ts); break;
      case 'error':
        this._report(new WsnbError(`server says ${frame.code}: ${frame.reason}`, frame.code));
        break;
      default:
        this._complain(conn, new FrameError('bad_envelope', `unexpected ${frame.type} frame`));
    }
  }

  /** Answer a bad frame: nack when it refuses one message (the id counts as consumed), error otherwise. */
  _complain(conn, err) {
    this._report(new WsnbError(`refused a frame: ${err.code}: ${err.message}`, err.code, { id: err.id }));
    if (err.id !== null) {
      this._sendFrame(conn, { type: 'nack', id: err.id, code: err.code, reason: err.message });
      this._skip(err.id);
    } else {
      this._sendFrame(conn, { type: 'error', code: err.code, reason: err.message });
    }
  }

  _onHandshakeAck(conn, frame) {
    if (this.state !== 'handshaking') {
      this._complain(conn, new FrameError('bad_envelope', 'unexpected handshake_ack'));
      return;
    }
    const resumed = frame.resumed === true;
    // Check everything first: a violation resolves nothing.
    if (frame.v !== VERSION) return this._violation(conn, `handshake_ack version ${frame.v}`);
    if (frame.max_size < 4096) return this._violation(conn, `max_size ${frame.max_size} is below 4096`);
    if (resumed && (this.session === null || frame.session !== this.session)) {
      return this._violation(conn, 'resumed a session this client did not ask for');
    }
    const highest = resumed ? this._highestWritten : 0;
    if (frame.last_acked > highest) {
      return this._violation(conn, `last_acked ${frame.last_acked} is above the highest id written (${highest})`);
    }
    if (!resumed && this.session !== null) this._sessionLost();
    this.session = frame.session;
    this.resumed = resumed;
    this.heartbeatMs = frame.heartbeat_ms;
    this.maxSize = frame.max_size;
    this._ackedUpto = this._lastDelivered; // told in the handshake's last_seen
    this._ackAgain = false;
    this._settleUpto(frame.last_acked);
    this._onReady(conn, frame);
  }

  /** The server lost our session: renumber un-acked messages from 1 and start receiving at 1. */
  _sessionLost() {
    this._report(new WsnbError(
      `session ${this.session.slice(0, 8)}… was lost: ${this._outbox.length} un-acked message(s) `
      + 'renumbered and resent (at-least-once)', 'session_lost'));
    this._outbox.forEach((out, index) => {
      out.id = index + 1;
      if (out.writes > 0) {
        out.renumbered = true;
        this.stats.renumbered++;
      }
    });
    this._nextId = this._outbox.length + 1;
    this._highestWritten = 0;
    this._lastDelivered = 0;
    this._held.clear();
  }

  _onAck(conn, frame) {
    const { id, upto } = frame;
    const highest = Math.max(Number.isSafeInteger(id) ? id : 0, Number.isSafeInteger(upto) ? upto : 0);
    if (highest > this._highestWritten) {
      this._violation(conn, `ack for ${highest}, above the highest id written (${this._highestWritten})`);
      return;
    }
    if (Number.isSafeInteger(upto)) this._settleUpto(upto);
    if (Number.isSafeInteger(id)) {
      const index = this._outbox.findIndex((out) => out.id === id);
      if (index >= 0) this._settle(index, 1);
    }
  }

  _settleUpto(upto) {
    let count = 0;
    while (count < this._outbox.length && this._outbox[count].id <= upto) count++;
    if (count) this._settle(0, count);
  }

  _settle(index, count) {
    const done = this._outbox.splice(index, count);
    if (index < this._written) this._written -= Math.min(count, this._written - index);
    this.stats.acked += done.length;
    for (const out of done) {
      out.resolve({ id: out.id, resent: out.writes > 1, renumbered: out.renumbered });
    }
  }

  _onNack(frame) {
    const out = this._outbox.find((o) => o.id === frame.id);
    if (!out || frame.id > this._highestWritten) {
      this._report(new WsnbError(`nack for id ${frame.id}, which is not in flight`, frame.code));
      return;
    }
    this.stats.nacked++;
    this._fail(out, new WsnbError(`refused: ${frame.code}: ${frame.reason}`, frame.code, { id: frame.id }));
  }

  async _onMsg(conn, frame) {
    const id = frame.id;
    if (id <= this._lastDelivered || this._held.has(id)) { // a duplicate: ack again, never deliver twice
      this.stats.duplicates++;
      this._ackAgain = true;
      this._scheduleAck();
      return;
    }
    if (id - this._lastDelivered > this.maxHeld) { // not acked: the server resends it later
      this._sendFrame(conn, { type: 'error', code: 'too_far_ahead',
        reason: `id ${id} is more than ${this.maxHeld} ahead of ${this._lastDelivered}` });
      return;
    }
    let payload;
    try {
      if (this._key) await this._verify(frame);
      payload = frame.z === 1 ? await this._unpack(frame) : frame.d;
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this._complain(conn, err);
      return;
    }
    this._held.set(id, payload);
    this._release();
    this._scheduleAck();
  }

  async _verify(frame) {
    if (typeof frame.s !== 'string') throw new FrameError('bad_signature', 'signature missing', frame.id);
    const { s, ...unsigned } = frame;
    let canonical;
    try {
      canonical = canonicalize(unsigned);
    } catch {
      throw new FrameError('bad_signature', 'frame cannot be canonicalized', frame.id);
    }
    const expected = await hmacHex(await this._key, `${this.session}\n${canonical}`);
    if (!sameText(s, expected)) throw new FrameError('bad_signature', 'signature does not match', frame.id);
    if (Math.abs(Date.now() - frame.ts) > this.replayWindowMs) {
      throw new FrameError('bad_signature', 'outside the replay window', frame.id);
    }
  }

  async _unpack(frame) {
    if (typeof DecompressionStream !== 'function') {
      throw new FrameError('bad_envelope', 'compressed payloads are not supported here', frame.id);
    }
    let text;
    try {
      text = await inflate(frame.d, this.maxMessage);
    } catch (err) {
      const tooLarge = err instanceof RangeError;
      throw new FrameError(tooLarge ? 'too_large' : 'bad_envelope',
        tooLarge ? err.message : `compressed d is not zlib+base64: ${err.message}`, frame.id);
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new FrameError('bad_json', `inflated payload is not JSON: ${err.message}`, frame.id);
    }
  }

  _onChunk(conn, frame) {
    const { id, i, n, data } = frame;
    const maxChunks = Math.ceil(this.maxMessage / 1024);
    const refuse = (code, reason) => {
      conn.partial = null;
      this._complain(conn, new FrameError(code, reason, id));
    };
    if (n > maxChunks) return refuse('too_large', `${n} chunks exceed the limit of ${maxChunks}`);
    let partial = conn.partial; // at most one partial message per connection
    if (!partial) {
      if (i !== 0) return refuse('bad_envelope', `chunk series ${id} must start at i=0`);
      partial = conn.partial = { id, n, parts: [], bytes: 0 };
    } else if (id !== partial.id || n !== partial.n || i !== partial.parts.length) {
      return refuse('bad_envelope', 'chunks out of order or of another message; partial message discarded');
    }
    if ((data.length && isHigh(data.charCodeAt(data.length - 1))) || isLow(data.charCodeAt(0))) {
      return refuse('bad_json', 'a chunk boundary splits a surrogate pair');
    }
    partial.bytes += utf8Length(data);
    if (partial.bytes > this.maxMessage) return refuse('too_large', `chunked message exceeds ${this.maxMessage} bytes`);
    partial.parts.push(data);
    if (partial.parts.length < n) return undefined;
    conn.partial = null;
    let msg;
    try {
      msg = parseFrame(partial.parts.join(''));
      if (msg.type !== 'msg' || msg.id !== id) throw new FrameError('bad_envelope', `chunks ${id} must join into msg ${id}`);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      return refuse(err.code, err.message);
    }
    return this._onMsg(conn, msg);
  }

  /** A refused id counts as consumed, so it never blocks the ids after it. */
  _skip(id) {
    if (id <= this._lastDelivered || this._held.has(id) || id - this._lastDelivered > this.maxHeld) return;
    this._held.set(id, SKIPPED);
    this._release();
    this._scheduleAck();
  }

  /** Hand every consecutive held message to the application, in id order. */
  _release() {
    while (this._held.has(this._lastDelivered + 1)) {
      const id = this._lastDelivered + 1;
      const payload = this._held.get(id);
      this._held.delete(id);
      this._lastDelivered = id;
      if (payload === SKIPPED) continue;
      this.stats.received++;
      if (this.onmessage) {
        try { this.onmessage(payload); } catch (err) { this._report(err); }
      }
    }
  }

  _scheduleAck() {
    const pending = this._lastDelivered - this._ackedUpto;
    if (pending >= 64 || this._ackAgain) {
      this._sendAck();
    } else if (pending > 0 && this._ackTimer === null) {
      this._ackTimer = setTimeout(() => this._sendAck(), this.ackDelay);
    }
  }

  _sendAck() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (!this._conn || this.state !== 'ready' || this._lastDelivered === 0) return;
    this._ackAgain = false;
    this._ackedUpto = this._lastDelivered;
    this._sendFrame(this._conn, `{"type":"ack","upto":${this._lastDelivered}}`);
  }
}

/**
 * A msg frame's text with keys in canonical order (d, id, s, ts, type, v, z).
 * `out.d` is canonical JSON when signing, so the text without `s` is the
 * frame's JCS form: exactly what the signature covers.
 */
function msgText(out, ts, signature) {
  const s = signature === null ? '' : `"s":"${signature}",`;
  return `{"d":${out.d},"id":${out.id},${s}"ts":${ts},"type":"msg","v":${VERSION},"z":${out.z}}`;
}
