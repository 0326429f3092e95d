// Tests for runtimes/nodejs/bootstrap.mjs: run the bootstrap as a child process against an
// in-process fake Runtime API, with fixture functions written to a temporary task root.
//
//   node --test runtimes/nodejs/test/

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, openSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BOOTSTRAP = fileURLToPath(new URL('../bootstrap.mjs', import.meta.url));
const RUNTIME = '/2018-06-01/runtime';
const ARN = 'arn:aws:lambda:us-east-1:123456789012:function:fn';
const TEXT_LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\t([^\t]*)\t(TRACE|DEBUG|INFO|WARN|ERROR|FATAL)\t([^\n]*)$/;

const scratch = mkdtempSync(join(tmpdir(), 'condo-node-bootstrap-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let runCounter = 0;

/**
 * A fake Runtime API. Serves `invocations` in order on GET /next, then holds further /next
 * requests open (a long poll that never answers). Records every POST, together with what the
 * child had written to its output at the moment the POST arrived.
 */
function startFakeApi(invocations, outputFile, { dropNext = false } = {}) {
  const queue = [...invocations];
  const posts = [];
  const state = { nextCount: 0 };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (req.method === 'GET' && req.url === `${RUNTIME}/invocation/next`) {
        state.nextCount += 1;
        if (dropNext) {
          req.socket.destroy();
          return;
        }
        const inv = queue.shift();
        if (!inv) return; // long poll: never answered
        const headers = {
          'Content-Type': 'application/json',
          'Lambda-Runtime-Aws-Request-Id': inv.id,
          'Lambda-Runtime-Deadline-Ms': String(Date.now() + (inv.timeoutMs ?? 30000)),
          'Lambda-Runtime-Invoked-Function-Arn': ARN,
          ...inv.headers,
        };
        res.writeHead(200, headers);
        res.end(typeof inv.body === 'string' ? inv.body : JSON.stringify(inv.body ?? {}));
        return;
      }
      if (req.method === 'POST') {
        let json;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        posts.push({
          path: req.url,
          headers: req.headers,
          body,
          json,
          outputAtPost: readFileSync(outputFile, 'utf8'),
        });
        res.writeHead(202, { 'Content-Type': 'application/json' });
        res.end('{"status":"OK"}');
        return;
      }
      res.writeHead(404);
      res.end();
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, port: server.address().port, posts, state }));
  });
}

async function until(predicate, timeoutMs, what) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Run the bootstrap once.
 *   files: {relative path: source} written to a fresh task root
 *   handler: _HANDLER
 *   invocations: [{id, body, headers, timeoutMs}]
 *   posts: how many POSTs to wait for; the run also waits until the runtime polls /next again
 *          (unless it exits), so the runtime is known to have survived.
 *   exits: wait for the process to exit instead of killing it.
 */
async function run({ files = {}, handler, invocations = [], posts: wantPosts = 0, exits = false, env = {}, api = {} }) {
  const id = ++runCounter;
  const taskRoot = join(scratch, `task${id}`);
  mkdirSync(taskRoot);
  for (const [rel, source] of Object.entries(files)) {
    mkdirSync(dirname(join(taskRoot, rel)), { recursive: true });
    writeFileSync(join(taskRoot, rel), source);
  }
  // stdout and stderr share one file, as they share one pipe under condo; the file lets the fake
  // API read what had been written when each POST arrived.
  const outputFile = join(scratch, `output${id}.log`);
  const outFd = openSync(outputFile, 'w');
  const fake = await startFakeApi(invocations, outputFile, api);
  const childEnv = {
    PATH: process.env.PATH,
    AWS_LAMBDA_RUNTIME_API: `127.0.0.1:${fake.port}`,
    _HANDLER: handler,
    LAMBDA_TASK_ROOT: taskRoot,
    LAMBDA_RUNTIME_DIR: dirname(BOOTSTRAP),
    AWS_LAMBDA_FUNCTION_NAME: 'fn',
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
    AWS_LAMBDA_LOG_GROUP_NAME: '/aws/lambda/fn',
    AWS_LAMBDA_LOG_STREAM_NAME: '2025/01/01/[$LATEST]0123456789abcdef0123456789abcdef',
    AWS_REGION: 'us-east-1',
    TZ: 'UTC',
    ...env,
  };
  const child = spawn(process.execPath, [BOOTSTRAP], { cwd: taskRoot, env: childEnv, stdio: ['ignore', outFd, outFd] });
  closeSync(outFd);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let exit = null;
  exited.then((e) => (exit = e));
  try {
    if (exits) {
      let timer;
      await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, 8000)))]);
      clearTimeout(timer);
      if (!exit) throw new Error(`the runtime did not exit; output:\n${readFileSync(outputFile, 'utf8')}`);
    } else {
      await until(
        () => exit !== null || (fake.posts.length >= wantPosts && fake.state.nextCount > wantPosts),
        8000,
        `${wantPosts} posts`,
      );
    }
  } finally {
    if (exit === null) child.kill('SIGKILL');
    const final = await exited;
    fake.server.closeAllConnections();
    fake.server.close();
    exit = exit ?? final;
  }
  const output = readFileSync(outputFile, 'utf8');
  return { posts: fake.posts, nextCount: fake.state.nextCount, exit, output, lines: output.split('\n').filter(Boolean) };
}

function textLines(output, requestId) {
  return output
    .split('\n')
    .map((l) => TEXT_LINE.exec(l))
    .filter((m) => m && (requestId === undefined || m[2] === requestId))
    .map((m) => ({ ts: m[1], requestId: m[2], level: m[3], message: m[4] }));
}

describe('condo Node.js bootstrap', { concurrency: true }, () => {
  test('CommonJS async handler: responses, context and invoke headers', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'index.js': `
          exports.handler = async (event, context) => {
            if (event.nothing) return undefined;
            return {
              event,
              functionName: context.functionName,
              functionVersion: context.functionVersion,
              memoryLimitInMB: context.memoryLimitInMB,
              awsRequestId: context.awsRequestId,
              invokedFunctionArn: context.invokedFunctionArn,
              logGroupName: context.logGroupName,
              logStreamName: context.logStreamName,
              tenantId: context.tenantId === undefined ? '<undefined>' : context.tenantId,
              clientContext: context.clientContext === undefined ? '<undefined>' : context.clientContext,
              identity: context.identity === undefined ? '<undefined>' : context.identity,
              remaining: context.getRemainingTimeInMillis(),
              waits: context.callbackWaitsForEmptyEventLoop,
              legacy: [typeof context.done, typeof context.succeed, typeof context.fail],
              trace: process.env._X_AMZN_TRACE_ID ?? '<unset>',
              maxConcurrency: process.env.AWS_LAMBDA_MAX_CONCURRENCY ?? '<unset>',
            };
          };
        `,
      },
      invocations: [
        {
          id: 'req-1',
          body: { a: 1 },
          timeoutMs: 5000,
          headers: {
            'Lambda-Runtime-Trace-Id': 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1',
            'Lambda-Runtime-Client-Context': JSON.stringify({ client: { app_title: 'demo' }, custom: { k: 'v' } }),
            'Lambda-Runtime-Cognito-Identity': JSON.stringify({ cognitoIdentityId: 'id-1', cognitoIdentityPoolId: 'pool-1' }),
            'Lambda-Runtime-Invocation-Id': 'attempt-1',
          },
        },
        { id: 'req-2', body: { b: [2] }, timeoutMs: 60000, headers: { 'Lambda-Runtime-Aws-Tenant-Id': 'BlueTenant' } },
        { id: 'req/3', body: { nothing: true } },
      ],
      posts: 3,
    });
    assert.equal(r.exit.signal, 'SIGKILL', `runtime should still be polling; output:\n${r.output}`);
    assert.equal(r.posts.length, 3);
    const [p1, p2, p3] = r.posts;

    assert.equal(p1.path, `${RUNTIME}/invocation/req-1/response`);
    assert.equal(p1.headers['content-type'], 'application/json');
    assert.equal(p1.headers['lambda-runtime-invocation-id'], 'attempt-1');
    const c1 = p1.json;
    assert.deepEqual(c1.event, { a: 1 });
    assert.equal(c1.functionName, 'fn');
    assert.equal(c1.functionVersion, '$LATEST');
    assert.equal(c1.memoryLimitInMB, '256');
    assert.equal(c1.awsRequestId, 'req-1');
    assert.equal(c1.invokedFunctionArn, ARN);
    assert.equal(c1.logGroupName, '/aws/lambda/fn');
    assert.equal(c1.logStreamName, '2025/01/01/[$LATEST]0123456789abcdef0123456789abcdef');
    assert.equal(c1.tenantId, '<undefined>');
    assert.deepEqual(c1.clientContext, { client: { app_title: 'demo' }, custom: { k: 'v' } });
    assert.deepEqual(c1.identity, { cognitoIdentityId: 'id-1', cognitoIdentityPoolId: 'pool-1' });
    assert.ok(c1.remaining > 3000 && c1.remaining <= 5000, `remaining ${c1.remaining}`);
    assert.equal(c1.waits, true);
    assert.deepEqual(c1.legacy, ['function', 'function', 'function']);
    assert.equal(c1.trace, 'Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1');
    assert.equal(c1.maxConcurrency, '<unset>');

    assert.equal(p2.path, `${RUNTIME}/invocation/req-2/response`);
    assert.equal(p2.headers['lambda-runtime-invocation-id'], undefined);
    assert.deepEqual(p2.json.event, { b: [2] });
    assert.equal(p2.json.tenantId, 'BlueTenant');
    assert.equal(p2.json.clientContext, '<undefined>');
    assert.equal(p2.json.identity, '<undefined>');
    assert.equal(p2.json.trace, '<unset>', 'trace id from the previous invoke must not leak');
    assert.ok(p2.json.remaining > 55000 && p2.json.remaining <= 60000, `remaining ${p2.json.remaining}`);

    // undefined result -> null; the request id is URL-encoded in the path
    assert.equal(p3.path, `${RUNTIME}/invocation/req%2F3/response`);
    assert.equal(p3.body, 'null');
  });

  test('ES module in a subdirectory with a dotted export name', async () => {
    const r = await run({
      handler: 'src/app.handlers.main',
      files: {
        'src/app.mjs': `
          import { sep } from 'node:path';
          export const handlers = { main: async (event, context) => ({ esm: true, twice: event.n * 2, id: context.awsRequestId, sep }) };
        `,
      },
      invocations: [{ id: 'e1', body: { n: 21 } }],
      posts: 1,
    });
    assert.equal(r.posts[0].path, `${RUNTIME}/invocation/e1/response`, r.output);
    assert.deepEqual(r.posts[0].json, { esm: true, twice: 42, id: 'e1', sep: '/' });
  });

  test('"type": "module" makes a .js file an ES module', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'package.json': '{"type":"module"}',
        'index.js': `export const handler = async () => ({ kind: typeof require === 'undefined' ? 'esm' : 'cjs' });`,
      },
      invocations: [{ id: 'm1', body: {} }],
      posts: 1,
    });
    assert.deepEqual(r.posts[0].json, { kind: 'esm' }, r.output);
  });

  test('.cjs module.exports with a nested handler, found through the default export', async () => {
    const r = await run({
      handler: 'lib/handler.api.v1.get',
      files: {
        'lib/handler.cjs': `
          const api = {};
          api.v1 = { get: async (event) => ({ got: event.path }) };
          module.exports = Object.assign(Object.create(null), { api });
        `,
      },
      invocations: [{ id: 'c1', body: { path: '/x' } }],
      posts: 1,
    });
    assert.deepEqual(r.posts[0].json, { got: '/x' }, r.output);
  });

  test('callback handlers, callbackWaitsForEmptyEventLoop and the legacy context methods', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'index.js': `
          exports.handler = function (event, context, callback) {
            switch (event.mode) {
              case 'later':
                setTimeout(() => callback(null, { mode: 'later' }), 20);
                return;
              case 'waits':
                callback(null, { mode: 'waits' });
                setTimeout(() => console.log('timer after callback'), 150);
                return;
              case 'nowait':
                context.callbackWaitsForEmptyEventLoop = false;
                callback(null, { mode: 'nowait' });
                setTimeout(() => console.log('late timer'), 300);
                return;
              case 'error':
                callback(new Error('callback failed'));
                callback(null, 'second call is ignored');
                return;
              case 'succeed':
                context.succeed({ mode: 'succeed' });
                return;
              case 'fail':
                context.fail(new RangeError('context.fail'));
                return;
              case 'never':
                return;
            }
          };
        `,
      },
      invocations: ['later', 'waits', 'nowait', 'error', 'succeed', 'fail', 'never'].map((mode) => ({
        id: `cb-${mode}`,
        body: { mode },
      })),
      posts: 7,
    });
    const byId = Object.fromEntries(r.posts.map((p) => [p.path.split('/')[4], p]));
    assert.equal(r.posts.length, 7, r.output);
    assert.deepEqual(byId['cb-later'].json, { mode: 'later' });
    assert.deepEqual(byId['cb-waits'].json, { mode: 'waits' });
    assert.match(byId['cb-waits'].outputAtPost, /timer after callback/, 'waits for the empty event loop');
    assert.deepEqual(byId['cb-nowait'].json, { mode: 'nowait' });
    assert.doesNotMatch(byId['cb-nowait'].outputAtPost, /late timer/, 'does not wait when told not to');
    assert.equal(byId['cb-error'].path, `${RUNTIME}/invocation/cb-error/error`);
    assert.equal(byId['cb-error'].json.errorType, 'Error');
    assert.equal(byId['cb-error'].json.errorMessage, 'callback failed');
    assert.deepEqual(byId['cb-succeed'].json, { mode: 'succeed' });
    assert.equal(byId['cb-fail'].path, `${RUNTIME}/invocation/cb-fail/error`);
    assert.equal(byId['cb-fail'].json.errorType, 'RangeError');
    assert.equal(byId['cb-never'].path, `${RUNTIME}/invocation/cb-never/response`);
    assert.equal(byId['cb-never'].body, 'null');
  });

  test('handler errors are posted to /error and the runtime keeps serving', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'index.js': `
          class MyError extends Error { constructor(m) { super(m); this.name = 'MyError'; } }
          exports.handler = async (event) => {
            switch (event.kind) {
              case 'type': throw new TypeError('bad input');
              case 'custom': throw new MyError('custom failure');
              case 'string': throw 'plain string';
              case 'circular': { const o = { a: 1 }; o.self = o; return o; }
              case 'hang': return new Promise(() => {});
              case 'ok': return 'fine';
            }
          };
        `,
      },
      invocations: [
        { id: 'x-type', body: { kind: 'type' } },
        { id: 'x-custom', body: { kind: 'custom' } },
        { id: 'x-string', body: { kind: 'string' } },
        { id: 'x-circular', body: { kind: 'circular' } },
        { id: 'x-unmarshal', body: '{not json' },
        { id: 'x-hang', body: { kind: 'hang' } },
        { id: 'x-ok', body: { kind: 'ok' } },
      ],
      posts: 7,
    });
    assert.equal(r.exit.signal, 'SIGKILL', r.output);
    const [type, custom, str, circular, unmarshal, hang, ok] = r.posts;

    assert.equal(type.path, `${RUNTIME}/invocation/x-type/error`);
    assert.equal(type.headers['content-type'], 'application/json');
    assert.equal(type.headers['lambda-runtime-function-error-type'], 'TypeError');
    assert.equal(type.json.errorType, 'TypeError');
    assert.equal(type.json.errorMessage, 'bad input');
    assert.ok(Array.isArray(type.json.trace));
    assert.equal(type.json.trace[0], 'TypeError: bad input');
    assert.match(type.json.trace[1], /^ {4}at /);
    assert.deepEqual(Object.keys(type.json), ['errorType', 'errorMessage', 'trace']);

    assert.equal(custom.json.errorType, 'MyError');
    assert.equal(custom.headers['lambda-runtime-function-error-type'], 'MyError');

    assert.deepEqual(str.json, { errorType: 'string', errorMessage: 'plain string', trace: [] });

    assert.equal(circular.path, `${RUNTIME}/invocation/x-circular/error`);
    assert.equal(circular.json.errorType, 'Runtime.SerializationError');
    assert.equal(circular.headers['lambda-runtime-function-error-type'], 'Runtime.SerializationError');

    assert.equal(unmarshal.path, `${RUNTIME}/invocation/x-unmarshal/error`);
    assert.equal(unmarshal.json.errorType, 'Runtime.UnmarshalError');

    assert.equal(hang.path, `${RUNTIME}/invocation/x-hang/error`);
    assert.equal(hang.json.errorType, 'Runtime.NodeJsExit');

    assert.equal(ok.path, `${RUNTIME}/invocation/x-ok/response`);
    assert.equal(ok.body, '"fine"');

    // AWS's log line for a failed invoke, written before the error was posted
    const invokeError = textLines(type.outputAtPost, 'x-type').find((l) => l.level === 'ERROR');
    assert.ok(invokeError, type.outputAtPost);
    assert.ok(invokeError.message.startsWith('Invoke Error \t{"errorType":"TypeError","errorMessage":"bad input"'), invokeError.message);
    assert.doesNotMatch(r.output, /\n\s+at /, 'no raw multi-line record in the output');
  });

  describe('init errors', { concurrency: true }, () => {
    async function initError(handler, files) {
      const r = await run({ handler, files, exits: true });
      assert.equal(r.exit.code, 1, r.output);
      assert.equal(r.nextCount, 0, 'never asks for an invocation');
      assert.equal(r.posts.length, 1, r.output);
      const [p] = r.posts;
      assert.equal(p.path, `${RUNTIME}/init/error`);
      assert.equal(p.headers['content-type'], 'application/json');
      assert.equal(p.headers['lambda-runtime-function-error-type'], p.json.errorType);
      assert.deepEqual(Object.keys(p.json), ['errorType', 'errorMessage', 'stackTrace']);
      assert.ok(Array.isArray(p.json.stackTrace));
      // logged like AWS, with "undefined" as the request id during init
      const logged = textLines(p.outputAtPost, 'undefined').find((l) => l.level === 'ERROR');
      assert.ok(logged && logged.message.startsWith('Uncaught Exception \t{"errorType":'), p.outputAtPost);
      return p.json;
    }

    test('missing module -> Runtime.ImportModuleError', async () => {
      const e = await initError('nope.handler', { 'index.js': 'exports.handler = async () => 1;' });
      assert.equal(e.errorType, 'Runtime.ImportModuleError');
      assert.match(e.errorMessage, /^Error: Cannot find module 'nope'/);
    });

    test('a dependency that is missing -> Runtime.ImportModuleError', async () => {
      const e = await initError('index.handler', {
        'index.js': "require('definitely-not-installed-pkg'); exports.handler = async () => 1;",
      });
      assert.equal(e.errorType, 'Runtime.ImportModuleError');
      assert.match(e.errorMessage, /definitely-not-installed-pkg/);
    });

    test('missing export -> Runtime.HandlerNotFound', async () => {
      const e = await initError('index.missing', { 'index.js': 'exports.handler = async () => 1;' });
      assert.equal(e.errorType, 'Runtime.HandlerNotFound');
      assert.equal(e.errorMessage, 'index.missing is undefined or not exported');
    });

    test('export that is not a function -> Runtime.HandlerNotFound', async () => {
      const e = await initError('index.value', { 'index.mjs': 'export const value = 42;' });
      assert.equal(e.errorType, 'Runtime.HandlerNotFound');
      assert.equal(e.errorMessage, 'index.value is not a function');
    });

    test('handler without a dot -> Runtime.MalformedHandlerName', async () => {
      const e = await initError('index', { 'index.js': 'exports.handler = async () => 1;' });
      assert.equal(e.errorType, 'Runtime.MalformedHandlerName');
    });

    test('syntax error -> Runtime.UserCodeSyntaxError', async () => {
      const e = await initError('index.handler', { 'index.js': 'exports.handler = async () => {\n  return 1 +;\n};\n' });
      assert.equal(e.errorType, 'Runtime.UserCodeSyntaxError');
      assert.match(e.errorMessage, /^SyntaxError: /);
      assert.ok(e.stackTrace.some((l) => l.endsWith('index.js:2')), e.stackTrace.join('\n'));
    });

    test('a module that throws while loading is reported as its own error', async () => {
      const e = await initError('index.handler', { 'index.mjs': "throw new TypeError('config missing');" });
      assert.equal(e.errorType, 'TypeError');
      assert.equal(e.errorMessage, 'config missing');
    });
  });

  test('text log format: one line per record, request id, levels', async () => {
    const r = await run({
      handler: 'index.handler',
      env: { AWS_LAMBDA_LOG_LEVEL: 'ERROR' }, // ignored in Text format, as on AWS
      files: {
        'index.js': `
          console.log('loading');
          exports.handler = async () => {
            console.log('hello %s', 'world', { a: 1 });
            console.info('multi\\nline');
            console.warn('careful');
            console.error('failed', new Error('boom'));
            console.debug('details');
            console.trace('tracing');
            console.fatal('fatal!');
            return 'ok';
          };
        `,
      },
      invocations: [{ id: 't1', body: {}, headers: { 'Lambda-Runtime-Aws-Tenant-Id': 'BlueTenant' } }],
      posts: 1,
    });
    const lines = textLines(r.posts[0].outputAtPost);
    assert.deepEqual(
      lines.map((l) => [l.requestId, l.level, l.message.split('\r')[0]]),
      [
        ['undefined', 'INFO', 'loading'],
        ['t1', 'INFO', 'hello world { a: 1 }'],
        ['t1', 'INFO', 'multi'],
        ['t1', 'WARN', 'careful'],
        ['t1', 'ERROR', 'failed Error: boom'],
        ['t1', 'DEBUG', 'details'],
        ['t1', 'TRACE', 'tracing'],
        ['t1', 'FATAL', 'fatal!'],
      ],
      r.output,
    );
    assert.equal(lines[2].message, 'multi\rline');
    assert.match(lines[4].message, /^failed Error: boom\r {4}at /);
    assert.ok(!isNaN(Date.parse(lines[1].ts)));
    assert.doesNotMatch(r.output, /BlueTenant/, 'no tenant id in text lines');
    // every non-empty output line is a record
    assert.equal(r.lines.filter((l) => !TEXT_LINE.test(l)).length, 0, r.output);
  });

  test('JSON log format: fields, tenant id, errors, level filter', async () => {
    const r = await run({
      handler: 'index.handler',
      env: { AWS_LAMBDA_LOG_FORMAT: 'JSON', AWS_LAMBDA_LOG_LEVEL: 'INFO' },
      files: {
        'index.mjs': `
          console.log('loading');
          export const handler = async (event) => {
            console.log('hello', 'json');
            console.log({ structured: true, n: 1 });
            console.info('multi\\nline');
            console.error('failed', new Error('boom'));
            console.error(new Error('solo'));
            console.debug('filtered out');
            console.trace('filtered out');
            const c = {}; c.c = c;
            console.warn(c);
            return event.n;
          };
        `,
      },
      invocations: [
        { id: 'j1', body: { n: 1 }, headers: { 'Lambda-Runtime-Aws-Tenant-Id': 'BlueTenant' } },
        { id: 'j2', body: { n: 2 } },
      ],
      posts: 2,
    });
    const records = r.lines.map((l) => JSON.parse(l));
    assert.doesNotMatch(r.output, /filtered out/);
    assert.equal(records.length, 1 + 6 * 2, r.output);

    const init = records[0];
    assert.deepEqual(Object.keys(init), ['timestamp', 'level', 'message']);
    assert.equal(init.message, 'loading');

    const j1 = records.filter((x) => x.requestId === 'j1');
    assert.equal(j1.length, 6);
    assert.deepEqual(Object.keys(j1[0]), ['timestamp', 'level', 'requestId', 'tenantId', 'message']);
    assert.equal(j1[0].timestamp, new Date(j1[0].timestamp).toISOString());
    assert.deepEqual(
      j1.map((x) => [x.level, x.tenantId]),
      [
        ['INFO', 'BlueTenant'],
        ['INFO', 'BlueTenant'],
        ['INFO', 'BlueTenant'],
        ['ERROR', 'BlueTenant'],
        ['ERROR', 'BlueTenant'],
        ['WARN', 'BlueTenant'],
      ],
    );
    assert.equal(j1[0].message, 'hello json');
    assert.deepEqual(j1[1].message, { structured: true, n: 1 });
    assert.equal(j1[2].message, 'multi\nline');
    assert.match(j1[3].message, /^failed Error: boom\n {4}at /);
    assert.equal(j1[3].errorType, 'Error');
    assert.equal(j1[3].errorMessage, 'boom');
    assert.equal(j1[3].stackTrace[0], 'Error: boom');
    assert.equal(j1[4].message.errorType, 'Error');
    assert.equal(j1[4].message.errorMessage, 'solo');
    assert.ok(Array.isArray(j1[4].message.stackTrace));
    assert.match(j1[5].message, /<ref \*1>/, 'a circular object is formatted with util.format');

    const j2 = records.filter((x) => x.requestId === 'j2');
    assert.equal(j2.length, 6);
    assert.ok(j2.every((x) => !('tenantId' in x)), 'tenantId only when set');
    assert.equal(r.posts[1].body, '2');
  });

  test('uncaught exception during an invoke: error posted, then exit 129', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'index.js': `
          exports.handler = async () => {
            setTimeout(() => { throw new RangeError('async boom'); }, 5);
            return new Promise(() => {});
          };
        `,
      },
      invocations: [{ id: 'u1', body: {} }, { id: 'u2', body: {} }],
      exits: true,
    });
    assert.equal(r.exit.code, 129, r.output);
    assert.equal(r.posts.length, 1);
    assert.equal(r.posts[0].path, `${RUNTIME}/invocation/u1/error`);
    assert.equal(r.posts[0].json.errorType, 'RangeError');
    assert.equal(r.posts[0].json.errorMessage, 'async boom');
    assert.match(r.output, /\tu1\tERROR\tUncaught Exception \t\{"errorType":"RangeError"/);
  });

  test('uncaught exception right after the result: the response still arrives, no error post, exit 129', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'index.js': `
          exports.handler = async () => {
            setImmediate(() => { throw new Error('after the fact'); });
            return { delivered: true };
          };
        `,
      },
      invocations: [{ id: 'a1', body: {} }],
      exits: true,
    });
    assert.equal(r.exit.code, 129, r.output);
    assert.deepEqual(
      r.posts.map((p) => [p.path, p.body]),
      [[`${RUNTIME}/invocation/a1/response`, '{"delivered":true}']],
    );
    assert.match(r.output, /Uncaught Exception \t\{"errorType":"Error","errorMessage":"after the fact"/);
  });

  test('JSON format: an init error is logged as one JSON record', async () => {
    const r = await run({
      handler: 'nope.handler',
      env: { AWS_LAMBDA_LOG_FORMAT: 'JSON' },
      exits: true,
    });
    assert.equal(r.exit.code, 1);
    assert.equal(r.lines.length, 1, r.output);
    const record = JSON.parse(r.lines[0]);
    assert.equal(record.level, 'ERROR');
    assert.equal(record.message.errorType, 'ImportModuleError');
    assert.match(record.message.errorMessage, /Cannot find module 'nope'/);
    assert.equal(r.posts[0].json.errorType, 'Runtime.ImportModuleError');
  });

  test('unhandled rejection during an invoke: Runtime.UnhandledPromiseRejection, then exit 128', async () => {
    const r = await run({
      handler: 'index.handler',
      files: {
        'index.mjs': `
          export const handler = async () => {
            Promise.reject(new Error('nobody catches me'));
            await new Promise((resolve) => setTimeout(resolve, 1000));
            return 'too late';
          };
        `,
      },
      invocations: [{ id: 'ur1', body: {} }],
      exits: true,
    });
    assert.equal(r.exit.code, 128, r.output);
    assert.equal(r.posts.length, 1);
    assert.equal(r.posts[0].path, `${RUNTIME}/invocation/ur1/error`);
    assert.equal(r.posts[0].json.errorType, 'Runtime.UnhandledPromiseRejection');
    assert.equal(r.posts[0].json.errorMessage, 'Error: nobody catches me');
    assert.equal(r.posts[0].headers['lambda-runtime-function-error-type'], 'Runtime.UnhandledPromiseRejection');
  });

  test('Runtime API unreachable: exits non-zero with a message', async () => {
    const closed = createServer();
    const port = await new Promise((resolve) => closed.listen(0, '127.0.0.1', () => resolve(closed.address().port)));
    await new Promise((resolve) => closed.close(resolve));
    const r = await run({
      handler: 'index.handler',
      files: { 'index.js': 'exports.handler = async () => 1;' },
      env: { AWS_LAMBDA_RUNTIME_API: `127.0.0.1:${port}` },
      exits: true,
    });
    assert.notEqual(r.exit.code, 0);
    assert.match(r.output, /ECONNREFUSED/);
  });

  test('Runtime API drops the connection during the long poll: exits non-zero', async () => {
    const r = await run({
      handler: 'index.handler',
      files: { 'index.js': 'exports.handler = async () => 1;' },
      api: { dropNext: true },
      exits: true,
    });
    assert.notEqual(r.exit.code, 0);
    assert.match(r.output, /ECONNRESET|socket hang up/);
  });
});
