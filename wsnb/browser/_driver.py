"""The page-side JavaScript shared by both backends (headless Chromium, anywidget view).

`DRIVER_JS` defines ``wsnbCreateDriver(emit)``: it owns the page's WebSocket
objects, runs commands with the browser's own semantics (``call(op, args)``
resolves to ``{ok: true, result}`` or ``{ok: false, name, message}`` for a thrown
DOMException) and reports every open / message / error / close event through
``emit``. Every snapshot of a socket carries ``seq``, a page-wide counter, so
Python can ignore a snapshot older than one it already applied (an event and a
command's reply travel by different routes).
"""

from __future__ import annotations

DRIVER_JS = r"""
function wsnbCreateDriver(emit) {
  "use strict";
  const sockets = new Map();
  const Native = globalThis.WebSocket;
  const AsyncFunction = (async () => {}).constructor;
  const enc = new TextEncoder();
  let seq = 0;
  let jsCount = 0;

  const toB64 = (buf) => {
    const bytes = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  };
  const fromB64 = (s) => {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  };
  const snap = (ws) => ({
    seq: ++seq, readyState: ws.readyState, bufferedAmount: ws.bufferedAmount,
    protocol: ws.protocol, extensions: ws.extensions, url: ws.url,
  });
  const fmt = (a) => {
    if (typeof a === "string") return a;
    if (a instanceof Error) return `${a.name}: ${a.message}`;
    try {
      const j = JSON.stringify(a);
      return j === undefined ? String(a) : j;
    } catch (e) {
      return String(a);
    }
  };
  const plain = (v) => {
    if (v === undefined) return null;
    if (v instanceof Native) {
      return {WebSocket: {url: v.url, readyState: v.readyState, bufferedAmount: v.bufferedAmount,
                          protocol: v.protocol, extensions: v.extensions}};
    }
    try {
      const j = JSON.stringify(v);
      return j === undefined ? String(v) : JSON.parse(j);
    } catch (e) {
      return String(v);
    }
  };
  const failure = (e) => ({
    ok: false,
    name: (e && e.name) || "Error",
    message: String(e && e.message !== undefined ? e.message : e),
  });

  function watch(sid, ws, own) {
    if (own) ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => emit({sid, ev: "open", ...snap(ws)}));
    ws.addEventListener("message", (e) => {
      const d = e.data;
      let m;
      if (typeof d === "string") m = {kind: "text", data: d, size: enc.encode(d).length};
      else if (d instanceof ArrayBuffer) m = {kind: "bytes", data: toB64(d), size: d.byteLength};
      else m = {kind: "blob", data: null, size: d.size};
      emit({sid, ev: "message", ...m, ...snap(ws)});
    });
    ws.addEventListener("error", () => emit({sid, ev: "error", ...snap(ws)}));
    ws.addEventListener("close", (e) => emit({
      sid, ev: "close", code: e.code, reason: e.reason, wasClean: e.wasClean, ...snap(ws)}));
  }

  const need = (sid) => {
    const ws = sockets.get(sid);
    if (!ws) {
      const e = new Error(`no WebSocket ${sid} in this page`);
      e.name = "NotFoundError";
      throw e;
    }
    return ws;
  };

  async function runJs({sid, snippet, url, protocols, until, timeout}) {
    const lines = [];
    const created = [];
    let check = () => {};
    // setTimeout 0: let every listener of the event being dispatched run first
    const wake = () => setTimeout(() => check(), 0);
    const note = (level, args) => { lines.push([level, args.map(fmt).join(" ")]); wake(); };
    const con = Object.create(console);
    for (const level of ["log", "info", "warn", "error", "debug"]) {
      con[level] = (...args) => { note(level, args); console[level](...args); };
    }
    class WebSocket extends Native {
      constructor(...a) {
        super(...a);
        created.push(this);
        watch(`${sid}/js${++jsCount}`, this, false);
        this.addEventListener("close", wake);
      }
    }
    const onError = (e) => note("error", [`Uncaught ${e.error ? fmt(e.error) : e.message}`]);
    const onRejection = (e) => note("error", [`Uncaught (in promise) ${fmt(e.reason)}`]);
    window.addEventListener("error", onError);
    window.addEventListener("unhandledrejection", onRejection);
    const params = ["console", "WebSocket", "url", "protocols"];
    let result = null;
    let error = null;
    let timedOut = false;
    try {
      let fn;
      try {
        fn = new AsyncFunction(...params, `return (${snippet}\n);`);  // a single expression
      } catch (e) {
        fn = new AsyncFunction(...params, snippet);  // statements, run verbatim
      }
      result = plain(await fn(con, WebSocket, url, protocols));
    } catch (e) {
      const {name, message} = failure(e);
      error = {name, message};
    }
    const done = () => {
      if (until === null || until === undefined) return true;
      if (until === "closed") return created.every((ws) => ws.readyState === Native.CLOSED);
      if (typeof until === "number") return lines.length >= until;
      return lines.some(([, text]) => text.includes(until));
    };
    try {
      if (!done()) {
        await new Promise((resolve) => {
          const timer = setTimeout(() => { timedOut = true; resolve(); }, timeout * 1000);
          check = () => { if (done()) { clearTimeout(timer); resolve(); } };
        });
      }
    } finally {
      check = () => {};
      window.removeEventListener("error", onError);
      window.removeEventListener("unhandledrejection", onRejection);
    }
    const sockets = created.map((ws) => plain(ws).WebSocket);
    return {console: lines, result, error, timedOut, sockets};
  }

  const ops = {
    open({sid, url, protocols}) {
      const ws = protocols === null || protocols === undefined
        ? new Native(url) : new Native(url, protocols);
      sockets.set(sid, ws);
      watch(sid, ws, true);
      return snap(ws);
    },
    send({sid, value}) {
      const ws = need(sid);
      const v = value.kind === "bytes" ? fromB64(value.data) : value.data;
      const text = v instanceof ArrayBuffer ? null : String(v);
      ws.send(v);
      const size = text === null ? v.byteLength : enc.encode(text).length;
      return {...snap(ws), size, text: text === null ? null : text.slice(0, 200)};
    },
    close({sid, code, reason}) {
      const ws = need(sid);
      if (code === null && reason === null) ws.close();
      else if (reason === null) ws.close(code);
      else ws.close(code === null ? undefined : code, reason);
      return snap(ws);
    },
    state({sid}) { return snap(need(sid)); },
    forget({sid}) {
      const ws = sockets.get(sid);
      sockets.delete(sid);
      if (!ws) return null;
      if (ws.readyState < Native.CLOSING) ws.close();
      return snap(ws);
    },
    info() {
      return {userAgent: navigator.userAgent, origin: location.origin, href: location.href};
    },
    run_js: runJs,
  };

  async function call(op, args) {
    try {
      const f = ops[op];
      if (!f) throw new Error(`unknown op ${op}`);
      return {ok: true, result: await f(args || {})};
    } catch (e) {
      return failure(e);
    }
  }
  return {call, sockets};
}
"""

#: Installs the driver in a plain page; events go to the exposed ``__wsnbEmit``.
HEADLESS_INSTALL_JS = (
    "(() => {" + DRIVER_JS
    + "\nwindow.__wsnb = wsnbCreateDriver((ev) => window.__wsnbEmit(ev));\nreturn true;\n})()"
)

#: The anywidget front-end module: the driver lives in the model's `initialize`
#: (one per model per page, it outlives any one view); `render` draws the status
#: line and says hello, so Python learns which page rendered the view.
WIDGET_ESM = DRIVER_JS + r"""
const PAGE = (globalThis.__wsnbPageId ??= (globalThis.crypto && crypto.randomUUID
  ? crypto.randomUUID() : String(Math.random()).slice(2) + String(Date.now())));
const STATES = ["CONNECTING", "OPEN", "CLOSING", "CLOSED"];

export default {
  initialize({ model }) {
    const driver = wsnbCreateDriver((ev) => model.send({ ev }));
    const onMsg = async (msg) => {
      if (!msg || msg.page !== PAGE || msg.op === undefined) return;
      const reply = await driver.call(msg.op, msg.args);
      model.send({ reply: msg.id, ...reply });
    };
    model.on("msg:custom", onMsg);
    return () => {
      for (const sid of Array.from(driver.sockets.keys())) driver.call("forget", { sid });
    };
  },
  render({ model, el }) {
    el.classList.add("wsnb-browser-socket");
    const line = document.createElement("code");
    el.appendChild(line);
    const draw = () => {
      const rs = model.get("ready_state");
      const owner = model.get("page");
      const where = owner === "" ? "" : owner === "headless" ? " (headless Chromium)"
        : owner === PAGE ? " (in this page)" : " (in another page)";
      const state = rs < 0 ? "not created yet" : STATES[rs] || String(rs);
      line.textContent = `browser WebSocket ${model.get("url")}: ${state}${where}`;
      el.dataset.readyState = String(rs);
    };
    model.on("change:ready_state", draw);
    model.on("change:page", draw);
    model.on("change:url", draw);
    draw();
    model.send({ hello: PAGE, origin: location.origin, userAgent: navigator.userAgent });
  },
};
"""
