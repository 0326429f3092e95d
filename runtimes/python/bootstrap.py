"""condo managed Python runtime: the process that turns the Lambda Runtime API into handler calls.

condo starts it inside the sandbox as

    /usr/bin/python3 -I -S -u /var/runtime/bootstrap.py

with the cwd set to the function code (/var/task). It uses only the standard library and has to work
without site-packages and without PYTHON* variables (-I ignores them). From the function author's point of
view it behaves like AWS's Python runtime (awslambdaric):

* `_HANDLER` is `module.function`; the module path may use `/` or `.` (`pkg/mod.handler`, `pkg.mod.handler`).
  LAMBDA_TASK_ROOT (default /var/task) is put first on sys.path.
* Init failures are posted to /runtime/init/error with `Lambda-Runtime-Function-Error-Type` and the process
  exits with status 1: Runtime.MalformedHandlerName, Runtime.BuiltInModuleConflict,
  Runtime.ImportModuleError, Runtime.UserCodeSyntaxError, Runtime.HandlerNotFound, or the class name of any
  other exception raised while the module is imported.
* One persistent HTTP/1.1 connection to AWS_LAMBDA_RUNTIME_API; GET .../invocation/next (long poll, no
  timeout), call handler(event, context), POST .../response or .../error. A dropped connection is re-opened;
  if the Runtime API cannot be reached at all (or /next answers other than 200) the process exits with
  status 2 and a message on stderr; /next answering 410 Gone (environment stopping) exits 0 quietly.
* Errors: Runtime.UnmarshalError (event is not JSON), Runtime.MarshalError (result not serialisable),
  Runtime.LambdaContextUnmarshalError (bad client-context/cognito JSON), `type(e).__name__` for exceptions
  from the handler, Runtime.ExitError when the handler calls sys.exit() (reported, then the exit goes on).
* The root `logging` logger gets one handler that writes AWS-shaped Text or JSON lines to stdout
  (AWS_LAMBDA_LOG_FORMAT), at the level given by AWS_LAMBDA_LOG_LEVEL (default INFO, see
  _DEFAULT_ROOT_LEVEL). `print` output is left alone.

AWS_LAMBDA_MAX_CONCURRENCY is deliberately never read: its presence switches AWS clients into a
multi-concurrent mode that condo does not implement.
"""

import importlib
import json
import os
import sys
import time

import http.client
from urllib.parse import quote as _quote  # already loaded by http.client, so free

_API_PREFIX = "/2018-06-01/runtime"
_NEXT_PATH = _API_PREFIX + "/invocation/next"
_INIT_ERROR_PATH = _API_PREFIX + "/init/error"

_HDR_REQUEST_ID = "Lambda-Runtime-Aws-Request-Id"
_HDR_DEADLINE = "Lambda-Runtime-Deadline-Ms"
_HDR_FUNCTION_ARN = "Lambda-Runtime-Invoked-Function-Arn"
_HDR_TRACE_ID = "Lambda-Runtime-Trace-Id"
_HDR_CLIENT_CONTEXT = "Lambda-Runtime-Client-Context"
_HDR_COGNITO_IDENTITY = "Lambda-Runtime-Cognito-Identity"
_HDR_TENANT_ID = "Lambda-Runtime-Aws-Tenant-Id"
_HDR_INVOCATION_ID = "Lambda-Runtime-Invocation-Id"
_HDR_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"

_USER_AGENT = "aws-lambda-python/%d.%d.%d-condo" % sys.version_info[:3]

# Runtime API connection attempts per request, and the pause before each retry (seconds).
_CONNECT_ATTEMPTS = 5
_RETRY_PAUSE = 0.05

_MARSHAL_ERROR = "Runtime.MarshalError"
_UNMARSHAL_ERROR = "Runtime.UnmarshalError"
_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
_HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
_IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
_BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
_MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"
_EXIT_ERROR = "Runtime.ExitError"

_UNHANDLED_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime version, "
    "you may be able to mitigate this error by temporarily rolling back to the previous runtime version. "
    "For more information, see https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)

_LOG_JSON = os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").strip().upper() == "JSON"

# Root logger level when AWS_LAMBDA_LOG_LEVEL is unset or not a known level name.
# Choice: INFO, so `logging.getLogger().info(...)` shows up without extra setup. This matches AWS whenever
# the JSON log format is used (Lambda then always sets AWS_LAMBDA_LOG_LEVEL, default INFO). It differs from
# AWS in plain Text mode, where awslambdaric leaves the root logger at Python's default WARNING and
# logger.info() is silently dropped unless the function calls setLevel itself; condo prefers showing it.
_DEFAULT_ROOT_LEVEL = "INFO"
_LOG_LEVEL_NAMES = {
    "TRACE": "DEBUG",
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARN": "WARNING",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "FATAL": "CRITICAL",
    "CRITICAL": "CRITICAL",
}

_THIS_FILE = os.path.abspath(__file__)


class _State:
    """Per-invocation values the log handler stamps on every record."""

    request_id = None
    tenant_id = None
    logging_configured = False


class _Fault(Exception):
    """A runtime-detected failure with a fixed AWS error type."""

    def __init__(self, error_type, message, trace=None):
        Exception.__init__(self, message)
        self.error_type = error_type
        self.message = message
        self.trace = trace


class _RuntimeAPIError(Exception):
    """The Runtime API is unreachable or answered in a way the runtime cannot continue from."""


class _EnvironmentStopping(Exception):
    """/next answered 410 Gone: the platform is shutting this environment down; exit quietly."""


# --------------------------------------------------------------------------------------------------------
# Output

class _LogSink:
    """Writes whole records to the stdout the process started with (one write per record).

    User code replacing sys.stdout (redirect_stdout and friends) does not capture runtime log lines;
    on AWS they go to a separate telemetry fd, so they are not captured there either.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        stream = self._stream
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:  # e.g. lone surrogates in a message: keep the line, escaped
                stream.write(text.encode("utf-8", "backslashreplace").decode("utf-8"))
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass

    def line(self, text):
        self.write(text + "\n")

    # awslambdaric's context.log() and some libraries look for handler.log_sink.log(msg).
    def log(self, msg, frame_type=None):
        self.write(msg)


def _prepare_stdio():
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            if (stream.encoding or "").lower().replace("-", "").replace("_", "") != "utf8":
                stream.reconfigure(encoding="utf-8", errors="backslashreplace")
            if not sys.flags.unbuffered:
                stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError, OSError):
            pass


_SINK = _LogSink(sys.stdout)


def _stderr(message):
    try:
        sys.stderr.write("condo python runtime: %s\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _utc_timestamp(epoch_seconds):
    """2024-01-02T03:04:05.678Z"""
    millis = int((epoch_seconds - int(epoch_seconds)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds)) + ".%03dZ" % millis


# --------------------------------------------------------------------------------------------------------
# logging: configured the moment anything imports it (not at all if nothing does)

def _resolve_root_level():
    value = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").strip().upper()
    return _LOG_LEVEL_NAMES.get(value, _DEFAULT_ROOT_LEVEL)


# LogRecord attributes that are not user `extra=` fields (JSON format copies the rest into the line).
_RESERVED_RECORD_FIELDS = frozenset((
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module", "exc_info",
    "exc_text", "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
    "threadName", "processName", "process", "taskName", "message", "asctime", "aws_request_id",
    "tenant_id", "_frame_type",
))


def _configure_logging(logging):
    """Attach the Lambda handler to the root logger of the given (just imported) logging module."""
    if _State.logging_configured:
        return
    _State.logging_configured = True
    try:
        _install_log_handler(logging)
    except Exception as exc:  # e.g. the function ships its own module called `logging`
        _stderr("could not configure the logging module: %r" % (exc,))


def _install_log_handler(logging):
    class LambdaLoggingFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _State.request_id or ""
            record.tenant_id = _State.tenant_id
            return True

    class LambdaLogHandler(logging.Handler):
        """Every record becomes exactly one stdout line: inner newlines become '\\r' (as on AWS)."""

        def __init__(self):
            logging.Handler.__init__(self)
            self.log_sink = _SINK

        def emit(self, record):
            try:
                text = self.format(record)
                if text.endswith("\n"):
                    text = text[:-1]
                _SINK.line(text.replace("\r\n", "\r").replace("\n", "\r"))
            except RecursionError:
                raise
            except Exception:
                self.handleError(record)

    class LambdaJsonFormatter(logging.Formatter):
        def format(self, record):
            level = min(50, max(0, record.levelno)) // 10 * 10
            msg = record.msg
            if isinstance(msg, dict) and not record.args:
                message = msg
            else:
                message = record.getMessage()
            exc_info = record.exc_info
            if exc_info and exc_info[0] is not None:
                import traceback

                stack = traceback.format_tb(exc_info[2])
                error_type = exc_info[0].__name__
                error_message = str(exc_info[1])
                location = "%s:%s:%s" % (record.pathname, record.funcName, record.lineno)
            else:
                stack = error_type = error_message = location = None
            result = {
                "timestamp": _utc_timestamp(record.created),
                "level": logging.getLevelName(level),
                "message": message,
                "logger": record.name,
                "stackTrace": stack,
                "errorType": error_type,
                "errorMessage": error_message,
                "requestId": getattr(record, "aws_request_id", None),
                "location": location,
            }
            tenant_id = getattr(record, "tenant_id", None)
            if tenant_id is not None:
                result["tenantId"] = tenant_id
            for key, value in record.__dict__.items():
                if key not in _RESERVED_RECORD_FIELDS and key not in result:
                    result[key] = value
            result = {k: v for k, v in result.items() if v is not None}
            return json.dumps(result, ensure_ascii=False, default=str)

    handler = LambdaLogHandler()
    if _LOG_JSON:
        handler.setFormatter(LambdaJsonFormatter())
    else:
        formatter = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    handler.addFilter(LambdaLoggingFilter())
    root = logging.getLogger()
    root.setLevel(_resolve_root_level())
    root.addHandler(handler)


class _ConfigureAfterExec:
    """Loader wrapper: runs the real loader, then configures the freshly executed logging module."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        real = self._loader
        # Put the real loader back before running any code, so nothing afterwards can see this wrapper.
        module.__loader__ = real
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = real
        real.exec_module(module)
        _configure_logging(module)


class _LoggingImportHook:
    """sys.meta_path entry that notices the first `import logging` (logging costs ~3 ms to import and
    many functions never use it). It removes itself on first use."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "logging":
            return None
        _remove_logging_hook()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module") and hasattr(loader, "create_module"):
            spec.loader = _ConfigureAfterExec(loader)
        return spec

    def invalidate_caches(self):
        pass


_LOGGING_HOOK = _LoggingImportHook()


def _install_logging_hook():
    if "logging" in sys.modules:
        _configure_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LOGGING_HOOK)


def _remove_logging_hook():
    try:
        sys.meta_path.remove(_LOGGING_HOOK)
    except ValueError:
        pass


def _ensure_logging():
    """Import logging (configuring it if this is the first import) and return it."""
    import logging

    if not _State.logging_configured:  # the hook could not wrap the loader
        _remove_logging_hook()
        _configure_logging(logging)
    return logging


# --------------------------------------------------------------------------------------------------------
# Errors

def _make_error(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace or [],
    }


def _is_runtime_frame(filename):
    if not filename:
        return True
    if filename.startswith("<frozen importlib"):
        return True
    try:
        absolute = os.path.abspath(filename)
    except (TypeError, ValueError):
        return False
    if absolute == _THIS_FILE:
        return True
    return absolute == os.path.abspath(importlib.__file__ or "")


def _error_from_exception(exc_info, request_id=None):
    """errorType/errorMessage/stackTrace for an exception, without the runtime's own leading frames."""
    import traceback

    etype, value, tb = exc_info
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    for index, frame in enumerate(frames):
        if not _is_runtime_frame(frame[0]):
            frames = frames[index:]
            break
    return _make_error(str(value), etype.__name__, traceback.format_list(frames), request_id)


def _replace_indentation(line):
    # AWS replaces leading spaces of stack lines with NO-BREAK SPACE so log viewers keep the indentation.
    stripped = line.lstrip(" ")
    return "\u00a0" * (len(line) - len(stripped)) + stripped


def _log_error(error):
    """Write an error the way the AWS runtime does: one line, in the configured log format."""
    if _LOG_JSON:
        record = {"timestamp": _utc_timestamp(time.time()), "level": "ERROR"}
        record.update(error)
        if _State.tenant_id is not None:
            record["tenantId"] = _State.tenant_id
        _SINK.line(json.dumps(record, ensure_ascii=False, default=str))
        return
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description, "Traceback (most recent call last):"]
    for element in error.get("stackTrace") or []:
        if element == "":
            lines.append("")
        else:
            lines.extend(_replace_indentation(part) for part in element.splitlines())
    _SINK.line("\r".join(lines).replace("\n", "\r"))


def _header_safe(value):
    """A value http.client will accept as a header (latin-1, no control characters)."""
    return "".join(c if " " <= c <= "~" else "?" for c in str(value))


def _exit_error(exit_exc, request_id):
    code = exit_exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        status = 1
    prefix = "RequestId: %s " % request_id if request_id else ""
    if status:
        message = "%sError: Runtime exited with error: exit status %d" % (prefix, status)
    else:
        message = "%sError: Runtime exited without providing a reason" % prefix
    return _make_error(message, _EXIT_ERROR, [], request_id)


# --------------------------------------------------------------------------------------------------------
# JSON

class _ResponseEncoder(json.JSONEncoder):
    def default(self, o):
        decimal = sys.modules.get("decimal")
        if decimal is not None and isinstance(o, decimal.Decimal):
            if o.is_nan():
                return float("nan")
            if o.is_finite() and o == o.to_integral_value():
                return int(o)
            return float(o)
        return json.JSONEncoder.default(self, o)


def _to_json_bytes(obj):
    try:
        return json.dumps(obj, cls=_ResponseEncoder, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: let json escape them
        return json.dumps(obj, cls=_ResponseEncoder).encode("ascii")


def _marshal_response(result):
    if isinstance(result, bytes):
        return result, "application/unknown"
    try:
        return _to_json_bytes(result), "application/json"
    except Exception as exc:
        raise _Fault(_MARSHAL_ERROR, "Unable to marshal response: %s" % exc)


def _unmarshal_event(body):
    try:
        return json.loads(body)
    except Exception as exc:
        raise _Fault(_UNMARSHAL_ERROR, "Unable to unmarshal input: %s" % exc)


def _parse_json_header(value, what):
    try:
        return json.loads(value)
    except Exception as exc:
        raise _Fault(_CONTEXT_UNMARSHAL_ERROR, "Unable to parse %s JSON: %s" % (what, exc))


# --------------------------------------------------------------------------------------------------------
# Context

class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data=None):
        data = data if isinstance(data, dict) else {}
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id, self.cognito_identity_pool_id)


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, data):
        for field in self.__slots__:
            setattr(self, field, data.get(field))

    def __repr__(self):
        return "Client([%s])" % ",".join("%s=%s" % (f, getattr(self, f)) for f in self.__slots__)


class ClientContext:
    __slots__ = ("custom", "env", "client")

    def __init__(self, data):
        self.custom = data.get("custom")
        self.env = data.get("env")
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else client

    def __repr__(self):
        return "ClientContext([custom=%s,env=%s,client=%s])" % (self.custom, self.env, self.client)


class LambdaContext:
    """The `context` argument. Attribute names and types follow awslambdaric (memory_limit_in_mb is the
    environment string, as on AWS)."""

    def __init__(self, request_id, deadline_ms, invoked_function_arn, client_context, cognito_identity,
                 tenant_id):
        environ = os.environ
        self.aws_request_id = request_id
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.client_context = ClientContext(client_context) if isinstance(client_context, dict) else None
        self.identity = CognitoIdentity(cognito_identity)
        self._epoch_deadline_time_in_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg):
        _SINK.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,"
            "memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s,client_context=%s,"
            "identity=%s,tenant_id=%s])" % (
                self.aws_request_id, self.log_group_name, self.log_stream_name, self.function_name,
                self.memory_limit_in_mb, self.function_version, self.invoked_function_arn,
                self.client_context, self.identity, self.tenant_id)
        )


# --------------------------------------------------------------------------------------------------------
# Runtime API client

def _private_copy(cls):
    """A subclass holding its own copy of cls's methods. Tracing/APM libraries (X-Ray, Sentry, ...) patch
    http.client.HTTPConnection in place; the runtime's own calls must not go through those patches."""
    namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    return type("_Runtime" + cls.__name__, (cls,), namespace)


_RuntimeHTTPResponse = _private_copy(http.client.HTTPResponse)
_RuntimeHTTPConnection = _private_copy(http.client.HTTPConnection)
_RuntimeHTTPConnection.response_class = _RuntimeHTTPResponse


class _Invocation:
    __slots__ = ("request_id", "deadline_ms", "function_arn", "trace_id", "client_context",
                 "cognito_identity", "tenant_id", "invocation_id", "body")


def _as_utf8(value):
    """http.client decodes header bytes as latin-1; JSON headers and tenant ids are UTF-8 on the wire."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


class _RuntimeClient:
    def __init__(self, address):
        self._address = address
        self._conn = None

    def _connection(self):
        if self._conn is None:
            # timeout=None: /next is a long poll, and socket.setdefaulttimeout() in user code must not apply.
            self._conn = _RuntimeHTTPConnection(self._address, timeout=None)
        return self._conn

    def _drop(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _call(self, method, path, body=None, headers=None):
        all_headers = {"User-Agent": _USER_AGENT}
        if headers:
            all_headers.update(headers)
        failure = None
        for attempt in range(_CONNECT_ATTEMPTS):
            if attempt:
                time.sleep(_RETRY_PAUSE * attempt)
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                # Refused, reset, or a kept-alive connection the server had already closed: reconnect.
                self._drop()
                failure = exc
                continue
            if response.will_close:
                self._drop()
            return response.status, response.msg, data
        raise _RuntimeAPIError(
            "%s http://%s%s failed: %s" % (method, self._address, path, failure or "no attempt made"))

    def next_invocation(self):
        status, headers, body = self._call("GET", _NEXT_PATH)
        if status == 410:
            raise _EnvironmentStopping()
        if status != 200:
            raise _RuntimeAPIError("GET %s returned HTTP %d: %r" % (_NEXT_PATH, status, body[:512]))
        inv = _Invocation()
        inv.request_id = headers.get(_HDR_REQUEST_ID)
        if not inv.request_id:
            raise _RuntimeAPIError("GET %s response has no %s header" % (_NEXT_PATH, _HDR_REQUEST_ID))
        try:
            inv.deadline_ms = int(headers.get(_HDR_DEADLINE, "0").strip())
        except ValueError:
            inv.deadline_ms = 0
        inv.function_arn = headers.get(_HDR_FUNCTION_ARN)
        inv.trace_id = headers.get(_HDR_TRACE_ID)
        inv.client_context = _as_utf8(headers.get(_HDR_CLIENT_CONTEXT))
        inv.cognito_identity = _as_utf8(headers.get(_HDR_COGNITO_IDENTITY))
        inv.tenant_id = _as_utf8(headers.get(_HDR_TENANT_ID))
        inv.invocation_id = headers.get(_HDR_INVOCATION_ID)  # echoed back byte for byte
        inv.body = body
        return inv

    def _post_checked(self, path, body, headers):
        status, _, data = self._call("POST", path, body, headers)
        if not 200 <= status < 300:
            _stderr("POST %s returned HTTP %d: %r" % (path, status, data[:512]))

    def post_response(self, inv, payload, content_type):
        headers = {"Content-Type": content_type}
        if inv.invocation_id:
            headers[_HDR_INVOCATION_ID] = inv.invocation_id
        path = "%s/invocation/%s/response" % (_API_PREFIX, _quote(inv.request_id, safe=""))
        self._post_checked(path, payload, headers)

    def post_error(self, inv, error):
        # Like awslambdaric: no Lambda-Runtime-Function-Error-Type header on invocation errors.
        headers = {"Content-Type": "application/json"}
        if inv.invocation_id:
            headers[_HDR_INVOCATION_ID] = inv.invocation_id
        path = "%s/invocation/%s/error" % (_API_PREFIX, _quote(inv.request_id, safe=""))
        self._post_checked(path, _to_json_bytes(error), headers)

    def post_init_error(self, error):
        headers = {
            "Content-Type": "application/json",
            _HDR_ERROR_TYPE: _header_safe(error.get("errorType") or "Runtime.Unknown"),
        }
        self._post_checked(_INIT_ERROR_PATH, _to_json_bytes(error), headers)


# --------------------------------------------------------------------------------------------------------
# Handler loading

def _load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as exc:
        raise _Fault(_MALFORMED_HANDLER_NAME, "Bad handler '%s': %s" % (handler, exc))
    module_path = modname.replace("/", ".")
    if not modname or not fname or module_path.startswith(".") or ".." in module_path:
        raise _Fault(_MALFORMED_HANDLER_NAME, "Bad handler '%s': empty module or function name" % handler)

    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise _Fault(_BUILT_IN_MODULE_CONFLICT,
                         "Cannot use built-in module %s as a handler module" % modname)
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise _Fault(_IMPORT_MODULE_ERROR, "Unable to import module '%s': %s" % (modname, exc))
    except SyntaxError as exc:
        trace = ['  File "%s" Line %s\n    %s' % (exc.filename, exc.lineno, exc.text)]
        raise _Fault(_SYNTAX_ERROR, "Syntax error in module '%s': %s" % (modname, exc), trace)

    try:
        return getattr(module, fname)
    except AttributeError:
        raise _Fault(_HANDLER_NOT_FOUND, "Handler '%s' missing on module '%s'" % (fname, modname))


def _setup_sys_path(task_root):
    entries = [task_root]
    # Layers, in AWS's order (only if present).
    layer_site = "/opt/python/lib/python%d.%d/site-packages" % sys.version_info[:2]
    for candidate in (layer_site, "/opt/python"):
        if os.path.isdir(candidate):
            entries.append(candidate)
    for entry in reversed(entries):
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _init_failed(client, error):
    try:
        _ensure_logging().warning(_UNHANDLED_WARNING)
    except Exception:
        pass
    _log_error(error)
    client.post_init_error(error)


# --------------------------------------------------------------------------------------------------------
# Invocation loop

def _handle_invocation(client, handler, inv):
    request_id = inv.request_id
    error = None
    try:
        client_context = None
        if inv.client_context:
            client_context = _parse_json_header(inv.client_context, "Client Context")
        cognito_identity = None
        if inv.cognito_identity:
            cognito_identity = _parse_json_header(inv.cognito_identity, "Cognito Identity")
        context = LambdaContext(request_id, inv.deadline_ms, inv.function_arn, client_context,
                                cognito_identity, inv.tenant_id)
        event = _unmarshal_event(inv.body)
        result = handler(event, context)
        payload, content_type = _marshal_response(result)
    except _Fault as fault:
        error = _make_error(fault.message, fault.error_type, fault.trace, request_id)
    except SystemExit as exit_exc:
        # AWS: the runtime process ends and the invoke fails with Runtime.ExitError. Report it ourselves
        # (condo then does not have to guess), then let the exit continue with the handler's status.
        error = _exit_error(exit_exc, request_id)
        _log_error(error)
        client.post_error(inv, error)
        raise
    except Exception:
        error = _error_from_exception(sys.exc_info(), request_id)

    if error is not None:
        _log_error(error)
        client.post_error(inv, error)
    else:
        client.post_response(inv, payload, content_type)


def _run(client, handler):
    while True:
        inv = client.next_invocation()
        _State.request_id = inv.request_id
        _State.tenant_id = inv.tenant_id
        if inv.trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = inv.trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        _handle_invocation(client, handler, inv)


def main():
    _prepare_stdio()
    # -I makes Python ignore PYTHONDONTWRITEBYTECODE; honour it here (the task root is read-only anyway).
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True

    address = os.environ.get("AWS_LAMBDA_RUNTIME_API", "").strip()
    if not address:
        _stderr("AWS_LAMBDA_RUNTIME_API is not set")
        return 1
    client = _RuntimeClient(address)

    _setup_sys_path(os.environ.get("LAMBDA_TASK_ROOT") or "/var/task")
    _install_logging_hook()

    try:
        try:
            handler = _load_handler(os.environ.get("_HANDLER", ""))
        except _Fault as fault:
            _init_failed(client, _make_error(fault.message, fault.error_type, fault.trace))
            return 1
        except SystemExit as exit_exc:
            _init_failed(client, _exit_error(exit_exc, None))
            raise
        except Exception:
            _init_failed(client, _error_from_exception(sys.exc_info()))
            return 1
        # The import hook stays installed: handlers may import logging lazily, at invoke time.
        if "logging" in sys.modules and not _State.logging_configured:
            _configure_logging(sys.modules["logging"])

        _run(client, handler)
    except _RuntimeAPIError as exc:
        _stderr("Runtime API unavailable, exiting: %s" % exc)
        return 2
    except _EnvironmentStopping:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
