// condo managed runtime for Node.js (nodejs20.x and later).
//
// Started by condo as `node /var/runtime/bootstrap.mjs` with cwd /var/task. It loads the function
// named by _HANDLER from LAMBDA_TASK_ROOT, then serves invocations from the Lambda Runtime API
// (2018-06-01) at AWS_LAMBDA_RUNTIME_API, one at a time, until the platform stops it.
//
// What a function author sees is meant to match AWS's own Node.js runtime: the handler forms
// (async, callback, legacy context.done/succeed/fail), the context object, the error bodies, the
// console log lines (Text and JSON formats) and the Runtime.* error types.
//
// Only node: built-ins, and only the cheap ones at start-up.

import { Agent, request as httpRequest } from 'node:http';
import { format, types as utilTypes } from 'node:util';
import { pathToFileURL } from 'node:url';
import { statSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';

const env = process.env;
const RUNTIME_PATH = '/2018-06-01/runtime';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const INVOCATION_ID_HEADER = 'Lambda-Runtime-Invocation-Id';

// Exit statuses. Init failures use 1; a crash while serving an invoke uses the statuses AWS's
// runtime uses (129 uncaught exception, 128 unhandled rejection).
const EXIT_INIT_FAILURE = 1;
const EXIT_FATAL = 1;
const EXIT_UNCAUGHT_EXCEPTION = 129;
const EXIT_UNHANDLED_REJECTION = 128;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/**
 * An error whose `name` is one of the Runtime.* types that AWS reports. As with AWS's classes, the
 * constructor is named after the short form (ImportModuleError), which JSON log records use as
 * errorType, while `name` (used in posted bodies and the stack header) is the Runtime.* form.
 */
const runtimeErrorClasses = new Map();
function runtimeError(type, message) {
  let ErrorClass = runtimeErrorClasses.get(type);
  if (!ErrorClass) {
    const shortName = type.replace(/^Runtime\./, '');
    ErrorClass = { [shortName]: class extends Error {} }[shortName];
    ErrorClass.prototype.name = type;
    runtimeErrorClasses.set(type, ErrorClass);
  }
  return new ErrorClass(message);
}

/**
 * Wrap a user-code failure into a Runtime.* error. The message is `String(cause)`, as AWS does
 * (e.g. "Error: Cannot find module 'index'"); the trace keeps the cause's frames (and, for a
 * CommonJS syntax error, its file:line excerpt) rather than the runtime's own frames.
 */
function wrapError(type, cause) {
  const err = runtimeError(type, safeString(cause));
  const stack = cause && typeof cause.stack === 'string' ? cause.stack : '';
  const lines = [`${type}: ${err.message}`];
  const blank = stack.indexOf('\n\n');
  if (cause instanceof SyntaxError && blank > 0 && !stack.startsWith('SyntaxError')) {
    lines.push(stack.slice(0, blank)); // "<file>:<line>\n<source line>\n    ^"
  }
  const frames = stack.indexOf('\n    at ');
  if (frames >= 0) lines.push(stack.slice(frames + 1));
  err.stack = lines.join('\n');
  return err;
}

function safeString(value) {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function isErrorLike(value) {
  if (value instanceof Error || utilTypes.isNativeError(value)) return true;
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof value.name === 'string' &&
    typeof value.message === 'string' &&
    typeof value.stack === 'string'
  );
}

/** The body AWS's Node runtime posts for an error: errorType, errorMessage, trace. */
function errorBody(error) {
  try {
    if (isErrorLike(error)) {
      return {
        errorType: String(error.name).replaceAll('\x7F', '%7F'),
        errorMessage: String(error.message).replaceAll('\x7F', '%7F'),
        trace: typeof error.stack === 'string' ? error.stack.replaceAll('\x7F', '%7F').split('\n') : [],
      };
    }
    return { errorType: typeof error, errorMessage: safeString(error), trace: [] };
  } catch {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
      trace: [],
    };
  }
}

function intoError(value) {
  return value instanceof Error ? value : new Error(value);
}

/** An HTTP header value cannot carry control or non-ASCII characters. */
function headerValue(value) {
  return String(value).replace(/[^\x20-\x7E]/g, '_').slice(0, 1024) || 'Error';
}

// ---------------------------------------------------------------------------------------------
// Logging: console.* become one-line records on stdout, as AWS's runtime writes them
// ---------------------------------------------------------------------------------------------

const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };
const jsonLogs = (env.AWS_LAMBDA_LOG_FORMAT || '').toUpperCase() === 'JSON';
// The level filter applies to the JSON format only (AWS offers it only with JSON logging).
const minLevel = jsonLogs ? (LEVELS[(env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] ?? LEVELS.TRACE) : LEVELS.TRACE;

let currentRequestId; // undefined until the first invoke, as on AWS ("undefined" in text lines)
let currentTenantId;

/** Errors inside a JSON log record: errorType, errorMessage, stackTrace, own enumerable props. */
function jsonErrorReplacer(_key, value) {
  if (value instanceof Error) {
    return Object.assign(
      {
        errorType: value?.constructor?.name ?? 'UnknownError',
        errorMessage: value.message,
        stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
      },
      value,
    );
  }
  return value;
}

function textRecord(level, args) {
  const line = `${new Date().toISOString()}\t${currentRequestId}\t${level}\t${format(...args)}`;
  return line.includes('\n') ? line.replaceAll('\n', '\r') : line;
}

function jsonRecord(level, args) {
  const record = { timestamp: new Date().toISOString(), level, requestId: currentRequestId };
  if (currentTenantId) record.tenantId = currentTenantId;
  if (args.length <= 1) {
    // A single argument keeps its structure: an object stays an object, an Error becomes
    // {errorType, errorMessage, stackTrace}.
    const value = args.length === 0 ? '' : args[0];
    record.message = value;
    if (value !== undefined && typeof value !== 'function' && typeof value !== 'symbol') {
      try {
        return JSON.stringify(record, jsonErrorReplacer);
      } catch {
        // circular, BigInt, a throwing toJSON: fall back to the formatted text
      }
    }
    record.message = format(value);
    return JSON.stringify(record);
  }
  record.message = format(...args);
  for (const arg of args) {
    if (arg instanceof Error) {
      record.errorType = arg?.constructor?.name ?? 'UnknownError';
      record.errorMessage = arg.message;
      record.stackTrace = typeof arg.stack === 'string' ? arg.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(record);
}

function patchConsole() {
  const makeRecord = jsonLogs ? jsonRecord : textRecord;
  const stdout = process.stdout;
  const nop = () => {};
  const logger = (level) =>
    LEVELS[level] < minLevel
      ? nop
      : (...args) => {
          // Pipes and files are written synchronously on Linux, so a record is in the pipe
          // before anything this process posts afterwards.
          stdout.write(makeRecord(level, args) + '\n');
        };
  console.trace = logger('TRACE');
  console.debug = logger('DEBUG');
  console.info = logger('INFO');
  console.log = console.info;
  console.warn = logger('WARN');
  console.error = logger('ERROR');
  console.fatal = logger('FATAL');
}

/** How the runtime itself reports an error in the function's log (AWS's wording). */
function logError(label, error) {
  const err = intoError(error);
  if (jsonLogs) {
    console.error(err);
    return;
  }
  let formatted;
  try {
    formatted =
      '\t' +
      JSON.stringify(err, (_key, value) => {
        if (!(value instanceof Error)) return value;
        const out = Object.assign(
          { errorType: value.name, errorMessage: value.message, code: value.code },
          value,
        );
        if (typeof value.stack === 'string') out.stack = value.stack.split('\n');
        return out;
      });
  } catch {
    formatted = '\t' + JSON.stringify(errorBody(err));
  }
  console.error(label, formatted);
}

/** Problems of the runtime itself (not of the function): one plain line on stderr. */
function runtimeNote(message) {
  try {
    process.stderr.write(`condo-nodejs-runtime: ${String(message).replaceAll('\n', ' ')}\n`);
  } catch {
    // nothing left to report to
  }
}

function fatal(message) {
  runtimeNote(message);
  process.exit(EXIT_FATAL);
}

// ---------------------------------------------------------------------------------------------
// Runtime API client
// ---------------------------------------------------------------------------------------------

let apiHost;
let apiPort;
let agent;

function configureApi(address) {
  const colon = address.lastIndexOf(':');
  apiHost = colon > 0 ? address.slice(0, colon) : address;
  apiPort = colon > 0 ? Number(address.slice(colon + 1)) : 80;
  if (apiHost.startsWith('[') && apiHost.endsWith(']')) apiHost = apiHost.slice(1, -1);
  if (!apiHost || !Number.isInteger(apiPort) || apiPort <= 0 || apiPort > 65535) {
    fatal(`AWS_LAMBDA_RUNTIME_API is not a host:port address: ${JSON.stringify(address)}`);
  }
  // One keep-alive connection for everything; an idle kept-alive socket does not hold the event
  // loop open, which the "empty event loop" semantics below rely on.
  agent = new Agent({ keepAlive: true, maxSockets: 1 });
}

/** One HTTP exchange with the Runtime API. Resolves {status, headers, body: Buffer}. */
function apiCall(method, path, headers, body, isRetry = false) {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: apiHost, port: apiPort, method, path, headers, agent },
      (res) => {
        const chunks = [];
        res.on('data', (chunk) => chunks.push(chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode,
            headers: res.headers,
            body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks),
          }),
        );
        res.on('error', reject);
        res.on('close', () => {
          if (!res.complete) reject(new Error('the Runtime API closed the connection mid-response'));
        });
      },
    );
    req.on('error', (err) => {
      // A kept-alive connection the server closed while it was idle: try once on a fresh one.
      if (!isRetry && req.reusedSocket && err.code === 'ECONNRESET') {
        resolve(apiCall(method, path, headers, body, true));
      } else {
        reject(err);
      }
    });
    req.end(body);
  });
}

async function apiPost(path, payload, extraHeaders) {
  const body = Buffer.from(payload, 'utf8');
  const headers = { 'Content-Type': 'application/json', 'Content-Length': body.length, ...extraHeaders };
  let res;
  try {
    res = await apiCall('POST', path, headers, body);
  } catch (err) {
    fatal(`POST ${path} failed: ${err.code || err.message}`);
  }
  if (res.status < 200 || res.status > 299) {
    runtimeNote(`POST ${path} answered ${res.status}: ${res.body.toString('utf8').slice(0, 512)}`);
  }
  return res;
}

function postInitError(error) {
  const { errorType, errorMessage, trace } = errorBody(error);
  return apiPost(
    `${RUNTIME_PATH}/init/error`,
    JSON.stringify({ errorType, errorMessage, stackTrace: trace }),
    { [ERROR_TYPE_HEADER]: headerValue(errorType) },
  );
}

// ---------------------------------------------------------------------------------------------
// Loading the handler
// ---------------------------------------------------------------------------------------------

function isFile(path) {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isFile() === true;
  } catch {
    return false;
  }
}

async function importModule(taskRoot, moduleRoot, moduleName) {
  const base = resolvePath(taskRoot, moduleRoot, moduleName);
  for (const ext of ['.js', '.mjs', '.cjs']) {
    const file = base + ext;
    // import() handles CommonJS and ES modules alike, and honours "type": "module".
    if (isFile(file)) return import(pathToFileURL(file).href);
  }
  // Rare forms AWS also accepts: an extensionless file, or a package resolved from node_modules.
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  if (isFile(base)) return require(base);
  const resolved = require.resolve(moduleName, { paths: [taskRoot, resolvePath(taskRoot, moduleRoot)] });
  return import(pathToFileURL(resolved).href);
}

function findExport(container, exportPath) {
  let value = container;
  for (const key of exportPath.split('.')) {
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return undefined;
    value = value[key];
  }
  return value;
}

async function loadHandler() {
  const taskRoot = env.LAMBDA_TASK_ROOT || '/var/task';
  const handlerString = env._HANDLER || '';
  if (handlerString.includes('..')) {
    throw runtimeError(
      'Runtime.MalformedHandlerName',
      `'${handlerString}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  // "src/app.handlers.main" -> module root "src/", module "app", export path "handlers.main"
  const slash = handlerString.lastIndexOf('/');
  const moduleRoot = handlerString.slice(0, slash + 1);
  const moduleAndExport = handlerString.slice(slash + 1);
  const dot = moduleAndExport.indexOf('.');
  if (dot < 0) throw runtimeError('Runtime.MalformedHandlerName', 'Bad handler');
  const moduleName = moduleAndExport.slice(0, dot);
  const exportPath = moduleAndExport.slice(dot + 1);

  let mod;
  try {
    mod = await importModule(taskRoot, moduleRoot, moduleName);
  } catch (err) {
    if (err instanceof SyntaxError) throw wrapError('Runtime.UserCodeSyntaxError', err);
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      throw wrapError('Runtime.ImportModuleError', err);
    }
    // Anything else the module throws while loading is reported as itself, as AWS does.
    throw err;
  }

  let handler = findExport(mod, exportPath);
  // A CommonJS module imported as ESM exposes module.exports as `default`.
  if (!handler && mod && mod.default != null) handler = findExport(mod.default, exportPath);
  if (!handler) {
    throw runtimeError('Runtime.HandlerNotFound', `${handlerString} is undefined or not exported`);
  }
  if (typeof handler !== 'function') {
    throw runtimeError('Runtime.HandlerNotFound', `${handlerString} is not a function`);
  }
  return handler;
}

// ---------------------------------------------------------------------------------------------
// Invocations
// ---------------------------------------------------------------------------------------------

let phase = 'init'; // 'init' until the handler is loaded, then 'invoke'
let handlerFn;
let current; // the invocation being served: {id, invocationId, finished}
let crashing = false;
let inflightPost = Promise.resolve(); // the last response/error POST

// What to do when the event loop runs empty (Node's 'beforeExit'): complete a callback-style
// invoke that waits for an empty loop, or report a handler that never finished.
let onEmptyLoop = null;

function onBeforeExit() {
  const action = onEmptyLoop;
  onEmptyLoop = null;
  if (action) {
    action();
    return;
  }
  if (crashing) return;
  if (phase === 'init') {
    // The module's top-level await never settled and nothing else is pending.
    const err = runtimeError(
      'Runtime.NodeJsExit',
      'The function module did not finish loading: a top-level promise never settled and the Node.js event loop is empty.',
    );
    crashing = true;
    logError('Uncaught Exception', err);
    postInitError(err).then(() => process.exit(EXIT_INIT_FAILURE));
    return;
  }
  fatal('the event loop became empty while no invocation was pending');
}

function nodeJsExitError() {
  return runtimeError(
    'Runtime.NodeJsExit',
    'The Node.js event loop became empty before the handler finished. This is most commonly caused by a Promise that was never settled.',
  );
}

async function nextInvocation() {
  let res;
  try {
    res = await apiCall('GET', `${RUNTIME_PATH}/invocation/next`);
  } catch (err) {
    fatal(`cannot reach the Runtime API at ${env.AWS_LAMBDA_RUNTIME_API}: ${err.code || err.message}`);
  }
  if (res.status !== 200) {
    fatal(`GET ${RUNTIME_PATH}/invocation/next answered ${res.status}: ${res.body.toString('utf8').slice(0, 512)}`);
  }
  invoke(res.headers, res.body);
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function invoke(headers, body) {
  const id = headers['lambda-runtime-aws-request-id'];
  if (!id) fatal('the invocation has no lambda-runtime-aws-request-id header');
  const tenantId = headers['lambda-runtime-aws-tenant-id'] || undefined;
  const traceId = headers['lambda-runtime-trace-id'];
  if (traceId) env._X_AMZN_TRACE_ID = traceId;
  else delete env._X_AMZN_TRACE_ID;
  currentRequestId = id;
  currentTenantId = tenantId;

  const inv = { id, invocationId: headers['lambda-runtime-invocation-id'], finished: false, called: false };
  current = inv;
  onEmptyLoop = null;

  let event;
  try {
    event = JSON.parse(body.toString('utf8'));
  } catch (err) {
    fail(inv, runtimeError('Runtime.UnmarshalError', `Unable to parse the event as JSON: ${err.message}`));
    return;
  }

  // callback, context.done, context.succeed and context.fail: only the first call counts.
  let waitsForEmptyLoop = true;
  const once = (fn) =>
    function () {
      if (inv.called) return;
      inv.called = true;
      fn.apply(undefined, arguments);
    };
  const callback = once((err, result) => {
    if (err !== undefined && err !== null) fail(inv, err);
    else if (waitsForEmptyLoop) onEmptyLoop = () => setImmediate(() => complete(inv, result));
    else complete(inv, result);
  });
  const done = once((err, result) => {
    if (err !== undefined && err !== null) fail(inv, err);
    else complete(inv, result);
  });

  let context;
  try {
    const deadline = Number(headers['lambda-runtime-deadline-ms']);
    context = {
      get callbackWaitsForEmptyEventLoop() {
        return waitsForEmptyLoop;
      },
      set callbackWaitsForEmptyEventLoop(value) {
        waitsForEmptyLoop = value;
      },
      succeed: (result) => done(null, result),
      fail: (err) => done(err === undefined || err === null ? 'handled' : err, null),
      done,
      functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
      functionName: env.AWS_LAMBDA_FUNCTION_NAME,
      memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
      logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
      clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
      identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
      invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
      awsRequestId: id,
      tenantId,
      getRemainingTimeInMillis: () => deadline - Date.now(),
    };
  } catch (err) {
    fail(inv, err);
    return;
  }

  // A handler that neither returns a promise nor calls back: when nothing is left to run, the
  // invocation succeeds with null (as on AWS). The callback replaces this.
  onEmptyLoop = () => complete(inv, null);

  let returned;
  try {
    returned = handlerFn(event, context, callback);
  } catch (err) {
    // As on AWS, a throw after the callback was already called is ignored.
    if (!inv.called) {
      inv.called = true;
      fail(inv, err);
    }
    return;
  }
  if (inv.finished) return;

  if (returned !== null && (typeof returned === 'object' || typeof returned === 'function') && typeof returned.then === 'function') {
    if (!inv.called) onEmptyLoop = () => fail(inv, nodeJsExitError());
    Promise.resolve(returned).then(
      (result) => {
        if (inv.called) return;
        inv.called = true;
        complete(inv, result);
      },
      (err) => {
        if (inv.called) return;
        inv.called = true;
        fail(inv, err === undefined || err === null ? 'handled' : err);
      },
    );
  } else if (returned !== undefined && handlerFn.length < 3 && !inv.called) {
    // A synchronous handler that returns its result (accepted by AWS's newest runtime).
    inv.called = true;
    complete(inv, returned);
  }
}

function invocationHeaders(inv, extra) {
  return inv.invocationId ? { ...extra, [INVOCATION_ID_HEADER]: inv.invocationId } : extra;
}

function complete(inv, result) {
  if (inv.finished) return;
  let payload;
  try {
    payload = JSON.stringify(result === undefined ? null : result);
  } catch (err) {
    const serr = runtimeError('Runtime.SerializationError', `Unable to stringify response body: ${err.message}`);
    fail(inv, serr);
    return;
  }
  inv.finished = true;
  onEmptyLoop = null;
  if (payload === undefined) payload = 'null'; // a function or a symbol
  inflightPost = apiPost(
    `${RUNTIME_PATH}/invocation/${encodeURIComponent(inv.id)}/response`,
    payload,
    invocationHeaders(inv, {}),
  );
  inflightPost.then(nextInvocation);
}

function fail(inv, error) {
  if (inv.finished) return;
  inv.finished = true;
  onEmptyLoop = null;
  try {
    logError('Invoke Error', error);
  } catch {
    // a console replaced by user code must not stop the error from being reported
  }
  const responseBody = errorBody(error);
  inflightPost = apiPost(
    `${RUNTIME_PATH}/invocation/${encodeURIComponent(inv.id)}/error`,
    JSON.stringify(responseBody),
    invocationHeaders(inv, { [ERROR_TYPE_HEADER]: headerValue(responseBody.errorType) }),
  );
  inflightPost.then(nextInvocation);
}

/**
 * An uncaught exception or unhandled rejection: report it for the invocation in progress (or as
 * the init error), then exit, like AWS's runtime. The platform starts a fresh environment.
 */
function crash(error, label, exitCode) {
  if (crashing) return;
  crashing = true;
  onEmptyLoop = null;
  try {
    logError(label, error);
  } catch {
    // keep going: the report below matters more than the log line
  }
  let posted;
  if (phase === 'init') {
    exitCode = EXIT_INIT_FAILURE;
    posted = postInitError(error);
  } else if (current && !current.finished) {
    current.finished = true;
    const responseBody = errorBody(error);
    posted = apiPost(
      `${RUNTIME_PATH}/invocation/${encodeURIComponent(current.id)}/error`,
      JSON.stringify(responseBody),
      invocationHeaders(current, { [ERROR_TYPE_HEADER]: headerValue(responseBody.errorType) }),
    );
  } else {
    // Let a response or error that is still being posted arrive before exiting.
    posted = inflightPost;
  }
  setTimeout(() => process.exit(exitCode), 2000).unref();
  posted.then(
    () => process.exit(exitCode),
    () => process.exit(exitCode),
  );
}

function onUncaughtException(error) {
  crash(error, 'Uncaught Exception', EXIT_UNCAUGHT_EXCEPTION);
}

function onUnhandledRejection(reason, promise) {
  const error = runtimeError('Runtime.UnhandledPromiseRejection', safeString(reason));
  error.reason = reason;
  error.promise = promise;
  crash(error, 'Unhandled Promise Rejection', EXIT_UNHANDLED_REJECTION);
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function main() {
  if (!env.AWS_LAMBDA_RUNTIME_API) fatal('AWS_LAMBDA_RUNTIME_API is not set');
  configureApi(env.AWS_LAMBDA_RUNTIME_API);
  patchConsole();
  process.on('uncaughtException', onUncaughtException);
  process.on('unhandledRejection', onUnhandledRejection);
  process.on('beforeExit', onBeforeExit);

  try {
    handlerFn = await loadHandler();
  } catch (err) {
    if (crashing) return;
    crashing = true;
    try {
      logError('Uncaught Exception', err);
    } catch {
      // report below regardless
    }
    await postInitError(err);
    process.exit(EXIT_INIT_FAILURE);
  }
  if (crashing) return;
  phase = 'invoke';
  nextInvocation();
}

main();
