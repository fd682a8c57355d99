'use strict';
// Runs JavaScript code for one execution as a CommonJS module (the twin of pyrunner.py).
//
// fd 4 holds the execution's JSON payload; the result goes to fd 3 as one JSON document,
// {"return_value": ...} or {"error": "..."}, never through stdout. The handler is exports[name],
// module.exports[name], or a top-level declaration of that name (name = entrypoint or "handler"),
// which a line appended to the code hands out of the module scope. No handler: the code is a script,
// and its exit status decides.

const fs = require('fs');
const path = require('path');
const Module = require('module');

const RESULT_FD = 3;
const PAYLOAD_FD = 4;
const FILENAME = '<handler>';

let reported = false;

function writeResult(text) {
  const buf = Buffer.from(text, 'utf8');
  let offset = 0;
  while (offset < buf.length) {
    offset += fs.writeSync(RESULT_FD, buf, offset, buf.length - offset);
  }
}

function describe(err) {
  if (err instanceof Error) {
    return `${err.name || 'Error'}: ${err.message}`;
  }
  return `Error: ${String(err)}`;
}

function fail(err) {
  if (reported) {
    return;
  }
  reported = true;
  const stack = err instanceof Error && err.stack ? err.stack : describe(err);
  try {
    process.stderr.write(`${stack}\n`);
  } catch (_) {
    // stderr gone: the result still carries the error
  }
  try {
    writeResult(JSON.stringify({ error: describe(err) }));
  } catch (_) {
    // the daemon stopped listening (cancelled)
  }
  process.exit(1);
}

function finish(value) {
  if (reported) {
    return;
  }
  let text;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (err) {
    const message = `TypeError: return value is not JSON serializable: ${err.message}`;
    process.stderr.write(`${message}\n`);
    reported = true;
    writeResult(JSON.stringify({ error: message }));
    process.exit(1);
  }
  reported = true;
  writeResult(`{"return_value": ${text === undefined ? 'null' : text}}`);
  // Like Lambda, the invocation ends when the handler's promise settles: leftover timers do not hold it.
  process.exit(0);
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

const payload = JSON.parse(fs.readFileSync(PAYLOAD_FD, 'utf8'));
fs.closeSync(PAYLOAD_FD);

const name = payload.entrypoint || 'handler';
const filename = path.join(payload.workspace, FILENAME);
const mod = new Module(filename, null);
mod.filename = filename;
mod.paths = Module._nodeModulePaths(payload.workspace);
// `name` is checked to be an identifier by the daemon, so this line cannot inject code.
const footer = `\n;module.__sandboxTopLevel = typeof ${name} === 'undefined' ? undefined : ${name};\n`;

let handler;
try {
  mod._compile(payload.code + footer, filename);
  handler = mod.exports ? mod.exports[name] : undefined;
  if (typeof handler !== 'function') {
    handler = typeof mod.__sandboxTopLevel === 'function' ? mod.__sandboxTopLevel : undefined;
  }
} catch (err) {
  fail(err);
}

if (!reported && handler === undefined && payload.entrypoint) {
  reported = true;
  writeResult(JSON.stringify({ error: `entrypoint '${name}' is not defined by the code` }));
  process.exit(1);
}

if (!reported && handler !== undefined) {
  const deadline = payload.deadline * 1000;
  const context = {
    awsRequestId: payload.execution_id,
    functionName: payload.session_id,
    functionVersion: '$LATEST',
    memoryLimitInMB: payload.memory_mb,
    callbackWaitsForEmptyEventLoop: false,
    getRemainingTimeInMillis: () => Math.max(0, Math.round(deadline - Date.now())),
  };
  let outcome;
  try {
    if (handler.length >= 3) {
      // Callback-style handler(event, context, callback), as Lambda still accepts.
      outcome = new Promise((resolve, reject) => {
        const ret = handler(payload.event, context, (err, value) => (err ? reject(err) : resolve(value)));
        if (ret && typeof ret.then === 'function') {
          ret.then(resolve, reject);
        }
      });
    } else {
      outcome = handler(payload.event, context);
    }
  } catch (err) {
    fail(err);
  }
  Promise.resolve(outcome).then(finish, fail);
}
