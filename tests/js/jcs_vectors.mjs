// RFC 8785 (JCS) test vectors against wsnb.mjs's canonicalize, plus chunk
// splitting and HMAC helpers. Prints one JSON line: {passed, failures, signatures}.
// Run by tests/js/test_wsnb_js.py (which checks the signatures with Python's hmac).
import { canonicalize, hmacHex, splitCodePoints, utf8Length } from '../../wsnb/js/wsnb.mjs';

const failures = [];
let passed = 0;
function check(name, got, want) {
  if (got === want) passed++;
  else failures.push({ name, got, want });
}
function throws(name, fn) {
  try { fn(); failures.push({ name, got: 'no error', want: 'an error' }); } catch { passed++; }
}

// RFC 8785 Appendix B: IEEE 754 doubles (as hex) and their canonical text.
const numbers = {
  '0000000000000000': '0',
  '8000000000000000': '0', // minus zero
  '0000000000000001': '5e-324',
  '8000000000000001': '-5e-324',
  '7fefffffffffffff': '1.7976931348623157e+308',
  'ffefffffffffffff': '-1.7976931348623157e+308',
  '4340000000000000': '9007199254740992',
  'c340000000000000': '-9007199254740992',
  '4430000000000000': '295147905179352830000',
  '44b52d02c7e14af5': '9.999999999999997e+22',
  '44b52d02c7e14af6': '1e+23',
  '44b52d02c7e14af7': '1.0000000000000001e+23',
  '444b1ae4d6e2ef4e': '999999999999999700000',
  '444b1ae4d6e2ef4f': '999999999999999900000',
  '444b1ae4d6e2ef50': '1e+21',
  '3eb0c6f7a0b5ed8c': '9.999999999999997e-7',
  '3eb0c6f7a0b5ed8d': '0.000001',
  '41b3de4355555553': '333333333.3333332',
  '41b3de4355555554': '333333333.33333325',
  '41b3de4355555555': '333333333.3333333',
  '41b3de4355555556': '333333333.3333334',
  '41b3de4355555557': '333333333.33333343',
  'becbf647612f3696': '-0.0000033333333333333333',
  '43143ff3c1cb0959': '1424953923781206.2',
};
for (const [hex, want] of Object.entries(numbers)) {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(`0x${hex}`));
  check(`number ${hex}`, canonicalize(view.getFloat64(0)), want);
}
for (const hex of ['7fffffffffffffff', '7ff0000000000000', 'fff0000000000000']) { // NaN, ±Infinity
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(`0x${hex}`));
  throws(`number ${hex} refused`, () => canonicalize(view.getFloat64(0)));
}
check('1e21', canonicalize(1e21), '1e+21');
check('1e-7', canonicalize(1e-7), '1e-7');
check('-0', canonicalize(-0), '0');
check('333333333.33333329', canonicalize(JSON.parse('333333333.33333329')), '333333333.3333333');

// RFC 8785 section 3.2.2 and the reference implementation's testdata (input text → output).
const documents = [
  ['values',
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
    + ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
    + ' "literals": [null, true, false]}',
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    + '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'],
  ['sorting (RFC 8785 3.2.3)',
    '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
    + ' "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
    + ' "\\u00f6": "Latin Small Letter O With Diaeresis"}',
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
    + '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
    + '"\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'],
  ['weird',
    '{"\\u20ac": "Euro Sign", "1": "One", "\\u0080": "Control\\u007f", "\\ud83d\\ude02": "Smiley",'
    + ' "\\u00f6": "Latin Small Letter O With Diaeresis", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
    + ' "</script>": "Browser Challenge"}',
    '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
    + '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude02":"Smiley",'
    + '"\ufb33":"Hebrew Letter Dalet With Dagesh"}'],
  ['structures',
    '{"1": {"f": {"f": "hi","F": 5} ,"\\n": 56.0}, "10": { }, "": "empty", "a": { },'
    + ' "111": [ { } ], "A": { }}',
    '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}'],
  ['unicode (no normalization)',
    '{"Unnormalized Unicode":"\\u1e0d\\u0307"}',
    '{"Unnormalized Unicode":"\u1e0d\u0307"}'],
  ['arrays', '[56, {"d": true, "10": null, "1": [ ]}]', '[56,{"1":[],"10":null,"d":true}]'],
  ['escapes', '"\\u0000\\b\\t\\n\\f\\r\\u001f \\" \\\\ / \\u007f \\u2028"',
    '"\\u0000\\b\\t\\n\\f\\r\\u001f \\" \\\\ / \u007f \u2028"'],
];
for (const [name, input, want] of documents) check(name, canonicalize(JSON.parse(input)), want);
throws('lone high surrogate refused', () => canonicalize('\ud83d'));
throws('lone low surrogate refused', () => canonicalize({ '\ude00': 1 }));
throws('BigInt refused', () => canonicalize(1n));
check('undefined members left out', canonicalize({ a: undefined, b: 1 }), '{"b":1}');

// Chunk slices: never between the halves of a surrogate pair, lengths in code points.
const text = `${'a😀'.repeat(50)}é€😀`;
for (const limit of [1, 2, 3, 7, 64]) {
  const slices = splitCodePoints(text, limit);
  check(`split ${limit} joins back`, slices.join(''), text);
  check(`split ${limit} sizes`, slices.every((s) => [...s].length <= limit), true);
  check(`split ${limit} no lone halves`,
    slices.every((s) => !/^[\udc00-\udfff]|[\ud800-\udbff]$/.test(s)), true);
}
check('utf8Length', utf8Length('aé€😀'), 1 + 2 + 3 + 4);

// Signatures: Python recomputes these with hmac over session + "\n" + the canonical text.
const secret = 's3cret-\u00e9';
const session = 'AbC-123_xyz';
const frames = [
  { type: 'msg', v: 1, id: 7, ts: 1700000000123, z: 0, d: { b: [1e21, 1e-7, -0, 0.5], a: 'x\u20ac😀\n' } },
  { z: 0, d: 'plain', ts: 1, id: 1, v: 1, type: 'msg' },
];
const signatures = [];
for (const frame of frames) {
  const canonical = canonicalize(frame);
  signatures.push({ secret, session, canonical, s: await hmacHex(secret, `${session}\n${canonical}`) });
}
console.log(JSON.stringify({ passed, failures, signatures }));
