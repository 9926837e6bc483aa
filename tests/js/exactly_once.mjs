// Node side of the exactly-once test: node exactly_once.mjs '<config JSON>'.
// Prints one JSON object per line: {event: 'ready', ...}, then the result.
import WebSocket from 'ws';
import { Client } from '../../wsnb/js/wsnb.mjs';
import { run } from './scenario.mjs';

const cfg = JSON.parse(process.argv[2]);
const result = await run(Client, WebSocket, cfg, (event) => console.log(JSON.stringify(event)));
console.log(JSON.stringify(result));
