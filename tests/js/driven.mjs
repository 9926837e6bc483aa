// A wsnb.mjs client driven line by line from the Python test (scripted-server cases).
//   node driven.mjs '<options JSON>'
// stdin, one JSON command a line: {cmd: 'connect'} | {cmd: 'send', payload} |
//   {cmd: 'close', code?} | {cmd: 'exit'}
// stdout, one JSON event a line: state, ready, connect_failed, message, error,
//   acked, rejected, closed. Every event carries the client's stats.
import readline from 'node:readline';
import WebSocket from 'ws';
import { Client } from '../../wsnb/js/wsnb.mjs';

const options = JSON.parse(process.argv[2]);
let client;
const emit = (event, fields = {}) => {
  console.log(JSON.stringify({ event, ...fields, stats: client.stats, session: client.session,
    readyState: client.readyState }));
};
client = new Client(options.url, {
  ...options,
  WebSocket,
  onmessage: (payload) => emit('message', { payload }),
  onerror: (error) => emit('error', { code: error.code, message: error.message }),
  onstatechange: (state, detail) => emit('state', { state, detail }),
});

let sends = 0;
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  const command = JSON.parse(line);
  if (command.cmd === 'connect') {
    client.connect().then(
      () => emit('ready', { resumed: client.resumed }),
      (err) => emit('connect_failed', { code: err.code, message: err.message }),
    );
  } else if (command.cmd === 'send') {
    const n = sends++;
    client.send(command.payload).then(
      (ack) => emit('acked', { n, ack }),
      (err) => emit('rejected', { n, code: err.code, message: err.message }),
    );
  } else if (command.cmd === 'close') {
    await client.close(command.code ?? 1000);
    emit('closed', { code: client.closeCode });
  } else if (command.cmd === 'exit') {
    await client.close();
    lines.close();
  }
});
