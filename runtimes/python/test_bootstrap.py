"""Tests for the condo Python runtime bootstrap.

Run from the repository root:

    python3 -m unittest discover -s runtimes/python -p 'test_*.py'

Each test starts an in-process fake Runtime API (ThreadingHTTPServer on 127.0.0.1:0) that serves queued
events and records every request, then runs `python -I -S -u bootstrap.py` against it with a temporary
LAMBDA_TASK_ROOT full of fixture handlers, and checks the recorded requests and the process output.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
BOOTSTRAP = os.path.join(HERE, "bootstrap.py")

PREFIX = "/2018-06-01/runtime"
NEXT = PREFIX + "/invocation/next"
INIT_ERROR = PREFIX + "/init/error"
WAIT = 10.0  # seconds; generous upper bound, tests normally finish in well under a second each

TS = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"

FIXTURES = {
    "ok_app.py": '''
        import os
        import sys

        CALLS = {"n": 0}

        def handler(event, context):
            CALLS["n"] += 1
            kind = event.get("kind") if isinstance(event, dict) else None
            if kind == "none":
                return None
            if kind == "bytes":
                return b"raw\\x00bytes"
            if kind == "unicode":
                return {"s": "h\\u00e9llo \\u2713"}
            if kind == "decimal":
                import decimal
                return {"int": decimal.Decimal("5"), "frac": decimal.Decimal("1.5")}
            if kind == "object":
                return object()
            if kind == "raise":
                raise ValueError("boom\\nsecond line")
            if kind == "modules":
                return {m: m in sys.modules for m in ("logging", "traceback")}
            if kind == "exit":
                sys.exit(event.get("code", 3))
            if kind == "context":
                cc = context.client_context
                return {
                    "function_name": context.function_name,
                    "function_version": context.function_version,
                    "invoked_function_arn": context.invoked_function_arn,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "aws_request_id": context.aws_request_id,
                    "log_group_name": context.log_group_name,
                    "log_stream_name": context.log_stream_name,
                    "tenant_id": context.tenant_id,
                    "remaining": context.get_remaining_time_in_millis(),
                    "cognito_identity_id": context.identity.cognito_identity_id,
                    "cognito_identity_pool_id": context.identity.cognito_identity_pool_id,
                    "client_custom": cc.custom if cc else None,
                    "client_app_title": cc.client.app_title if cc and cc.client else None,
                    "trace": os.environ.get("_X_AMZN_TRACE_ID"),
                    "max_concurrency_set": "AWS_LAMBDA_MAX_CONCURRENCY" in os.environ,
                    "sys_path_0": sys.path[0],
                }
            return {"echo": event, "calls": CALLS["n"]}
    ''',
    "logging_app.py": '''
        import logging

        logger = logging.getLogger()
        logger.warning("init warning")

        def handler(event, context):
            print("hello from print")
            logger.info("info message %s", 42)
            logger.debug("debug hidden")
            logger.warning("multi\\nline")
            logging.getLogger("child").error("child error", extra={"custom_field": "x"})
            try:
                raise KeyError("k")
            except KeyError:
                logger.exception("caught it")
            logger.info({"structured": True})
            return "ok"
    ''',
    "lazy_logging_app.py": '''
        def handler(event, context):
            import logging
            logging.getLogger("lazy").info("lazy info")
            return len(logging.getLogger().handlers)
    ''',
    "bad_syntax.py": '''
        def handler(event, context)
            return 1
    ''',
    "import_boom.py": '''
        def helper():
            raise RuntimeError("import went wrong")

        helper()
    ''',
    "dep_missing.py": '''
        import not_installed_dependency  # noqa: F401

        def handler(event, context):
            return 1
    ''',
    "init_exit.py": '''
        import sys
        sys.exit(7)
    ''',
    "patching_app.py": '''
        # What APM/tracing libraries and careless code do at import time.
        import http.client
        import socket

        def broken(*args, **kwargs):
            raise RuntimeError("patched http.client used")

        http.client.HTTPConnection.request = broken
        http.client.HTTPConnection.getresponse = broken
        http.client.HTTPResponse.read = broken
        socket.setdefaulttimeout(0.05)

        def handler(event, context):
            return "still fine"
    ''',
    "pkg/__init__.py": "",
    "pkg/sub/__init__.py": "",
    "pkg/sub/mod.py": '''
        def handler(event, context):
            return {"from": __name__}
    ''',
}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # The runtime under test is killed while its /next long poll is open; resets are expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            ThreadingHTTPServer.handle_error(self, request, client_address)


class FakeRuntimeAPI:
    """A Runtime API that serves queued events and records every request."""

    def __init__(self, drop_after_post=False):
        self.drop_after_post = drop_after_post
        self.next_status = 200  # set to 410 to answer the next /next with "environment stopping"
        self.cond = threading.Condition()
        self.pending = []
        self.requests = []
        self.closing = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _record(self, body):
                with api.cond:
                    api.requests.append({
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                        "port": self.client_address[1],
                    })
                    api.cond.notify_all()

            def _reply(self, status, body, headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._record(b"")
                if self.path != NEXT:
                    self._reply(404, b'{"errorType":"NotFound"}')
                    return
                with api.cond:
                    while not api.pending and not api.closing and api.next_status == 200:
                        api.cond.wait()
                    if api.next_status != 200 and not api.pending:
                        self._reply(api.next_status, b'{"errorType":"EnvironmentStopping"}')
                        return
                    if api.closing:
                        self.close_connection = True
                        return
                    event = api.pending.pop(0)
                self._reply(200, event["body"], event["headers"])

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self._record(body)
                self._reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])
                if api.drop_after_post:
                    # Close without announcing it: the client's next request hits a dead keep-alive socket.
                    self.close_connection = True

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add_event(self, request_id, body, headers=None, deadline_ms=None):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        if deadline_ms is None:
            deadline_ms = int(time.time() * 1000) + 60000
        all_headers = [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", request_id),
            ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:fn"),
        ]
        all_headers.extend(headers or [])
        with self.cond:
            self.pending.append({"body": body, "headers": all_headers})
            self.cond.notify_all()

    def stop_environment(self):
        with self.cond:
            self.next_status = 410
            self.cond.notify_all()

    def posts(self):
        with self.cond:
            return [r for r in self.requests if r["method"] == "POST"]

    def wait_for_requests(self, method, count, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [r for r in self.requests if r["method"] == method]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("expected %d %s requests, got %r" % (count, method, found))
                self.cond.wait(remaining)

    def wait_for_posts(self, count, timeout=WAIT):
        return self.wait_for_requests("POST", count, timeout)

    def close(self):
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()


def _write_fixtures(root):
    for rel, source in FIXTURES.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(source).lstrip("\n"))


class BootstrapTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.task_root = tempfile.mkdtemp(prefix="condo-task-")
        _write_fixtures(cls.task_root)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.task_root, ignore_errors=True)

    def setUp(self):
        self.procs = []
        self.apis = []

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for api in self.apis:
            api.close()

    def new_api(self, **kwargs):
        api = FakeRuntimeAPI(**kwargs)
        self.apis.append(api)
        return api

    def start(self, handler, api=None, address=None, extra_env=None):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": address or api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": self.task_root,
            "LAMBDA_RUNTIME_DIR": HERE,
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
            "AWS_REGION": "us-east-1",
            "TZ": "UTC",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Ignored under -I; must not break anything.
            "PYTHONPATH": "/nonexistent",
        }
        env.update(extra_env or {})
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-u", BOOTSTRAP],
            cwd=self.task_root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        """Kill a runtime that is blocked on /next and return (stdout, stderr) as text."""
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=WAIT)
        return out.decode("utf-8"), err.decode("utf-8")

    def finish(self, proc):
        """Wait for a runtime that exits by itself; return (returncode, stdout, stderr)."""
        out, err = proc.communicate(timeout=WAIT)
        return proc.returncode, out.decode("utf-8"), err.decode("utf-8")

    @staticmethod
    def lines(text):
        # Only '\n' ends a record; '\r' is part of a multi-line record.
        return [line for line in text.split("\n") if line]


class HandlerResultTests(BootstrapTestCase):
    def test_results_errors_and_persistent_connection(self):
        api = self.new_api()
        events = [
            ("r-echo", {"kind": "echo", "x": [1, 2]}),
            ("r-none", {"kind": "none"}),
            ("r-unicode", {"kind": "unicode"}),
            ("r-decimal", {"kind": "decimal"}),
            ("r-bytes", {"kind": "bytes"}),
            ("r-badjson", b"{not json"),
            ("r-object", {"kind": "object"}),
            ("r-raise", {"kind": "raise"}),
            ("r-modules", {"kind": "modules"}),
            ("r-after", "plain string event"),
        ]
        for request_id, body in events:
            api.add_event(request_id, body)
        proc = self.start("ok_app.handler", api)
        posts = api.wait_for_posts(len(events))
        api.wait_for_requests("GET", len(events) + 1)  # back on the long poll after the last event
        out, err = self.stop(proc)
        by_id = {p["path"].split("/")[4]: p for p in posts}
        self.assertEqual(len(by_id), len(events))

        def ok(request_id):
            post = by_id[request_id]
            self.assertEqual(post["path"], "%s/invocation/%s/response" % (PREFIX, request_id))
            return post

        echo = ok("r-echo")
        self.assertEqual(echo["headers"]["content-type"], "application/json")
        self.assertIn("user-agent", echo["headers"])
        self.assertEqual(json.loads(echo["body"]), {"echo": {"kind": "echo", "x": [1, 2]}, "calls": 1})
        self.assertEqual(ok("r-none")["body"], b"null")
        self.assertEqual(json.loads(ok("r-unicode")["body"].decode("utf-8")), {"s": "h\u00e9llo \u2713"})
        self.assertEqual(ok("r-decimal")["body"], b'{"int": 5, "frac": 1.5}')
        raw = ok("r-bytes")
        self.assertEqual(raw["body"], b"raw\x00bytes")
        self.assertEqual(raw["headers"]["content-type"], "application/unknown")
        self.assertEqual(json.loads(ok("r-modules")["body"]), {"logging": False, "traceback": True})
        self.assertEqual(json.loads(ok("r-after")["body"]), {"echo": "plain string event", "calls": 9})

        def err_body(request_id):
            post = by_id[request_id]
            self.assertEqual(post["path"], "%s/invocation/%s/error" % (PREFIX, request_id))
            self.assertEqual(post["headers"]["content-type"], "application/json")
            body = json.loads(post["body"])
            self.assertEqual(body["requestId"], request_id)
            return body

        unmarshal = err_body("r-badjson")
        self.assertEqual(unmarshal["errorType"], "Runtime.UnmarshalError")
        self.assertTrue(unmarshal["errorMessage"].startswith("Unable to unmarshal input: "))
        self.assertEqual(unmarshal["stackTrace"], [])

        marshal = err_body("r-object")
        self.assertEqual(marshal["errorType"], "Runtime.MarshalError")
        self.assertEqual(marshal["errorMessage"],
                         "Unable to marshal response: Object of type object is not JSON serializable")

        raised = err_body("r-raise")
        self.assertEqual(raised["errorType"], "ValueError")
        self.assertEqual(raised["errorMessage"], "boom\nsecond line")
        self.assertEqual(len(raised["stackTrace"]), 1, raised["stackTrace"])
        frame = raised["stackTrace"][0]
        self.assertIn('ok_app.py", line', frame)
        self.assertIn('raise ValueError("boom\\nsecond line")', frame)
        self.assertNotIn("bootstrap.py", "".join(raised["stackTrace"]))

        # The error is also logged, as one line, the way AWS prints it.
        self.assertIn(
            "[ERROR] ValueError: boom\rsecond line\rTraceback (most recent call last):\r"
            "\u00a0\u00a0File \"%s\"" % os.path.join(self.task_root, "ok_app.py"),
            out,
        )
        error_lines = [l for l in self.lines(out) if l.startswith("[ERROR] ValueError")]
        self.assertEqual(len(error_lines), 1)
        self.assertIn("[ERROR] Runtime.MarshalError: Unable to marshal response", out)

        # One persistent connection for every call; no init error; nothing on stderr.
        with api.cond:
            requests = list(api.requests)
        self.assertEqual({r["port"] for r in requests}, {requests[0]["port"]})
        self.assertEqual(sum(1 for r in requests if r["method"] == "GET"), len(events) + 1)
        self.assertFalse(any(r["path"] == INIT_ERROR for r in requests))
        self.assertEqual(err, "")
        # PYTHONDONTWRITEBYTECODE is honoured even though -I ignores PYTHON* variables.
        self.assertFalse(os.path.exists(os.path.join(self.task_root, "__pycache__")))

    def test_context_headers_and_invocation_id(self):
        api = self.new_api()
        deadline = int(time.time() * 1000) + 5000
        api.add_event("r-ctx", {"kind": "context"}, deadline_ms=deadline, headers=[
            ("lambda-runtime-aws-tenant-id", "tenant-\u00e9:blue"),  # lower-case name, UTF-8 value
            ("LAMBDA-RUNTIME-TRACE-ID", "Root=1-5e1b4151-43a974f7b9a5e3e9dfa4b8d7;Sampled=1"),
            ("Lambda-Runtime-Client-Context",
             json.dumps({"custom": {"k": "v"}, "env": {}, "client": {"app_title": "app"}})),
            ("Lambda-Runtime-Cognito-Identity",
             json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"})),
            ("Lambda-Runtime-Invocation-Id", "inv-123"),
        ])
        api.add_event("r-plain", {"kind": "context"}, headers=[("Lambda-Runtime-Trace-Id", "")])
        api.add_event("r-err", {"kind": "raise"}, headers=[("Lambda-Runtime-Invocation-Id", "inv-456")])
        api.add_event("r-badctx", {"kind": "context"},
                      headers=[("Lambda-Runtime-Client-Context", "{broken")])
        proc = self.start("ok_app.handler", api, extra_env={"AWS_LAMBDA_MAX_CONCURRENCY": "4"})
        posts = api.wait_for_posts(4)
        self.stop(proc)

        first = posts[0]
        self.assertEqual(first["path"], PREFIX + "/invocation/r-ctx/response")
        self.assertEqual(first["headers"].get("lambda-runtime-invocation-id"), "inv-123")
        ctx = json.loads(first["body"])
        self.assertEqual(ctx["function_name"], "fn")
        self.assertEqual(ctx["function_version"], "$LATEST")
        self.assertEqual(ctx["invoked_function_arn"], "arn:aws:lambda:us-east-1:123456789012:function:fn")
        self.assertEqual(ctx["memory_limit_in_mb"], "256")  # a string, as in awslambdaric
        self.assertEqual(ctx["aws_request_id"], "r-ctx")
        self.assertEqual(ctx["log_group_name"], "/aws/lambda/fn")
        self.assertTrue(ctx["log_stream_name"].startswith("2024/01/01/[$LATEST]"))
        self.assertEqual(ctx["tenant_id"], "tenant-\u00e9:blue")
        self.assertGreater(ctx["remaining"], 0)
        self.assertLessEqual(ctx["remaining"], 5000)
        self.assertEqual(ctx["cognito_identity_id"], "id-1")
        self.assertEqual(ctx["cognito_identity_pool_id"], "pool-1")
        self.assertEqual(ctx["client_custom"], {"k": "v"})
        self.assertEqual(ctx["client_app_title"], "app")
        self.assertEqual(ctx["trace"], "Root=1-5e1b4151-43a974f7b9a5e3e9dfa4b8d7;Sampled=1")
        self.assertEqual(ctx["sys_path_0"], self.task_root)
        self.assertTrue(ctx["max_concurrency_set"])  # passed through untouched, never interpreted

        second = posts[1]
        self.assertEqual(second["path"], PREFIX + "/invocation/r-plain/response")
        self.assertNotIn("lambda-runtime-invocation-id", second["headers"])
        ctx = json.loads(second["body"])
        self.assertIsNone(ctx["tenant_id"])
        self.assertIsNone(ctx["trace"])  # _X_AMZN_TRACE_ID is cleared when the header is absent
        self.assertIsNone(ctx["client_custom"])
        self.assertIsNone(ctx["cognito_identity_id"])

        third = posts[2]
        self.assertEqual(third["path"], PREFIX + "/invocation/r-err/error")
        self.assertEqual(third["headers"].get("lambda-runtime-invocation-id"), "inv-456")

        fourth = posts[3]
        self.assertEqual(fourth["path"], PREFIX + "/invocation/r-badctx/error")
        body = json.loads(fourth["body"])
        self.assertEqual(body["errorType"], "Runtime.LambdaContextUnmarshalError")
        self.assertTrue(body["errorMessage"].startswith("Unable to parse Client Context JSON: "))

    def test_handler_module_path_forms(self):
        for handler in ("pkg/sub/mod.handler", "pkg.sub.mod.handler"):
            with self.subTest(handler=handler):
                api = self.new_api()
                api.add_event("r-1", {})
                proc = self.start(handler, api)
                posts = api.wait_for_posts(1)
                self.stop(proc)
                self.assertEqual(posts[0]["path"], PREFIX + "/invocation/r-1/response")
                self.assertEqual(json.loads(posts[0]["body"]), {"from": "pkg.sub.mod"})

    def test_sys_exit_in_handler_is_reported_then_process_exits(self):
        api = self.new_api()
        api.add_event("r-exit", {"kind": "exit", "code": 3})
        proc = self.start("ok_app.handler", api)
        code, out, err = self.finish(proc)
        self.assertEqual(code, 3)
        posts = api.posts()
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["path"], PREFIX + "/invocation/r-exit/error")
        body = json.loads(posts[0]["body"])
        self.assertEqual(body["errorType"], "Runtime.ExitError")
        self.assertEqual(body["errorMessage"], "RequestId: r-exit Error: Runtime exited with error: exit status 3")

    def test_reconnects_when_server_drops_keepalive_connection(self):
        api = self.new_api(drop_after_post=True)
        for i in range(3):
            api.add_event("r-%d" % i, {"i": i})
        proc = self.start("ok_app.handler", api)
        posts = api.wait_for_posts(3)
        out, err = self.stop(proc)
        self.assertEqual([p["path"] for p in posts],
                         [PREFIX + "/invocation/r-%d/response" % i for i in range(3)])
        self.assertEqual([json.loads(p["body"])["echo"] for p in posts], [{"i": i} for i in range(3)])
        self.assertGreaterEqual(len({p["port"] for p in posts}), 3)
        self.assertEqual(err, "")

    def test_user_patches_to_http_client_and_socket_timeout_do_not_affect_runtime(self):
        api = self.new_api()
        proc = self.start("patching_app.handler", api)
        api.wait_for_requests("GET", 1)
        time.sleep(0.3)  # the long poll must outlive socket.setdefaulttimeout(0.05)
        api.add_event("r-1", {})
        posts = api.wait_for_posts(1)
        out, err = self.stop(proc)
        self.assertEqual(posts[0]["path"], PREFIX + "/invocation/r-1/response")
        self.assertEqual(json.loads(posts[0]["body"]), "still fine")
        self.assertEqual(err, "")

    def test_environment_stopping_exits_quietly(self):
        api = self.new_api()
        api.add_event("r-1", {})
        proc = self.start("ok_app.handler", api)
        api.wait_for_posts(1)
        api.stop_environment()
        code, out, err = self.finish(proc)
        self.assertEqual((code, err), (0, ""))

    def test_runtime_api_unreachable_exits_nonzero(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start = time.monotonic()
        proc = self.start("ok_app.handler", address="127.0.0.1:%d" % port)
        code, out, err = self.finish(proc)
        self.assertNotEqual(code, 0)
        self.assertIn("Runtime API", err)
        self.assertLess(time.monotonic() - start, 5)


class SourceTests(unittest.TestCase):
    def test_max_concurrency_is_never_used(self):
        import ast

        with open(BOOTSTRAP, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        docstring = ast.get_docstring(tree, clean=False)
        strings = [node.value for node in ast.walk(tree)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value != docstring]
        self.assertFalse([s for s in strings if "MAX_CONCURRENCY" in s])


class InitErrorTests(BootstrapTestCase):
    def run_init_failure(self, handler):
        api = self.new_api()
        proc = self.start(handler, api)
        code, out, err = self.finish(proc)
        self.assertEqual(code, 1, (out, err))
        with api.cond:
            requests = list(api.requests)
        self.assertEqual(len(requests), 1, requests)  # no /next after a failed init
        post = requests[0]
        self.assertEqual((post["method"], post["path"]), ("POST", INIT_ERROR))
        body = json.loads(post["body"])
        self.assertEqual(post["headers"]["lambda-runtime-function-error-type"], body["errorType"])
        self.assertIsInstance(body["stackTrace"], list)
        self.assertIn(
            "[ERROR] %s: %s\rTraceback (most recent call last):" % (body["errorType"], body["errorMessage"]),
            out,
        )
        self.assertIn("LAMBDA_WARNING: Unhandled exception.", out)
        return body, out

    def test_missing_module(self):
        body, _ = self.run_init_failure("does_not_exist.handler")
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
        self.assertEqual(body["errorMessage"],
                         "Unable to import module 'does_not_exist': No module named 'does_not_exist'")
        self.assertEqual(body["stackTrace"], [])

    def test_missing_dependency(self):
        body, _ = self.run_init_failure("dep_missing.handler")
        self.assertEqual(body["errorType"], "Runtime.ImportModuleError")
        self.assertEqual(body["errorMessage"],
                         "Unable to import module 'dep_missing': No module named 'not_installed_dependency'")

    def test_missing_function(self):
        body, _ = self.run_init_failure("ok_app.nope")
        self.assertEqual(body["errorType"], "Runtime.HandlerNotFound")
        self.assertEqual(body["errorMessage"], "Handler 'nope' missing on module 'ok_app'")

    def test_malformed_handler_name(self):
        body, _ = self.run_init_failure("ok_app")
        self.assertEqual(body["errorType"], "Runtime.MalformedHandlerName")
        self.assertTrue(body["errorMessage"].startswith("Bad handler 'ok_app': "))

    def test_builtin_module_conflict(self):
        body, _ = self.run_init_failure("sys.handler")
        self.assertEqual(body["errorType"], "Runtime.BuiltInModuleConflict")

    def test_syntax_error(self):
        body, _ = self.run_init_failure("bad_syntax.handler")
        self.assertEqual(body["errorType"], "Runtime.UserCodeSyntaxError")
        self.assertTrue(body["errorMessage"].startswith("Syntax error in module 'bad_syntax': "))
        self.assertIn("bad_syntax.py", body["stackTrace"][0])

    def test_exception_at_import_time(self):
        body, out = self.run_init_failure("import_boom.handler")
        self.assertEqual(body["errorType"], "RuntimeError")
        self.assertEqual(body["errorMessage"], "import went wrong")
        trace = "".join(body["stackTrace"])
        self.assertTrue(body["stackTrace"][0].lstrip().startswith('File "%s' % self.task_root), trace)
        self.assertIn('raise RuntimeError("import went wrong")', trace)
        self.assertNotIn("bootstrap.py", trace)
        self.assertNotIn("importlib", trace)

    def test_sys_exit_at_import_time(self):
        api = self.new_api()
        proc = self.start("init_exit.handler", api)
        code, out, err = self.finish(proc)
        self.assertEqual(code, 7)
        posts = api.posts()
        self.assertEqual([p["path"] for p in posts], [INIT_ERROR])
        self.assertEqual(json.loads(posts[0]["body"])["errorType"], "Runtime.ExitError")


class LoggingTests(BootstrapTestCase):
    def run_logging(self, extra_env=None, tenant=None):
        api = self.new_api()
        headers = [("Lambda-Runtime-Aws-Tenant-Id", tenant)] if tenant else []
        api.add_event("req-log-1", {}, headers=headers)
        proc = self.start("logging_app.handler", api, extra_env=extra_env)
        posts = api.wait_for_posts(1)
        out, err = self.stop(proc)
        self.assertEqual(posts[0]["path"], PREFIX + "/invocation/req-log-1/response")
        self.assertEqual(err, "")
        return self.lines(out)

    def test_text_format(self):
        lines = self.run_logging(tenant="blue")

        def match(pattern):
            found = [l for l in lines if re.fullmatch(pattern, l, re.S)]
            self.assertEqual(len(found), 1, "%r not in %r" % (pattern, lines))
            return found[0]

        match(r"\[WARNING\]\t%s\t\tinit warning" % TS)  # logged during init: empty request id
        self.assertIn("hello from print", lines)
        match(r"\[INFO\]\t%s\treq-log-1\tinfo message 42" % TS)
        match(r"\[WARNING\]\t%s\treq-log-1\tmulti\rline" % TS)
        match(r"\[ERROR\]\t%s\treq-log-1\tchild error" % TS)
        caught = match(r"\[ERROR\]\t%s\treq-log-1\tcaught it\rTraceback \(most recent call last\):\r.*" % TS)
        self.assertTrue(caught.endswith("KeyError: 'k'"), caught)
        match(r"\[INFO\]\t%s\treq-log-1\t\{'structured': True\}" % TS)
        self.assertFalse([l for l in lines if "debug hidden" in l])
        self.assertFalse([l for l in lines if "blue" in l])  # no tenant id in Text lines

    def test_json_format(self):
        lines = self.run_logging(extra_env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}, tenant="blue")
        self.assertIn("hello from print", lines)  # print output stays plain text
        records = [json.loads(l) for l in lines if l.startswith("{")]
        by_message = {json.dumps(r["message"]) if isinstance(r["message"], dict) else r["message"]: r
                      for r in records}

        init = by_message["init warning"]
        self.assertEqual(list(init), ["timestamp", "level", "message", "logger", "requestId"])
        self.assertEqual(init["level"], "WARNING")
        self.assertEqual(init["requestId"], "")
        self.assertRegex(init["timestamp"], "^%s$" % TS)

        info = by_message["info message 42"]
        self.assertEqual(list(info), ["timestamp", "level", "message", "logger", "requestId", "tenantId"])
        self.assertEqual((info["level"], info["logger"], info["requestId"], info["tenantId"]),
                         ("INFO", "root", "req-log-1", "blue"))

        self.assertEqual(by_message["multi\nline"]["level"], "WARNING")
        child = by_message["child error"]
        self.assertEqual((child["logger"], child["level"], child["custom_field"]), ("child", "ERROR", "x"))

        caught = by_message["caught it"]
        self.assertEqual(caught["errorType"], "KeyError")
        self.assertEqual(caught["errorMessage"], "'k'")
        self.assertIsInstance(caught["stackTrace"], list)
        self.assertIn('raise KeyError("k")', "".join(caught["stackTrace"]))
        self.assertIn("logging_app.py:handler:", caught["location"])

        self.assertEqual(by_message['{"structured": true}']["message"], {"structured": True})
        self.assertNotIn("debug hidden", by_message)

    def test_json_format_without_tenant(self):
        lines = self.run_logging(extra_env={"AWS_LAMBDA_LOG_FORMAT": "json"})
        records = [json.loads(l) for l in lines if l.startswith("{")]
        info = [r for r in records if r["message"] == "info message 42"][0]
        self.assertNotIn("tenantId", info)

    def test_log_level_from_environment(self):
        lines = self.run_logging(extra_env={"AWS_LAMBDA_LOG_LEVEL": "ERROR"})
        self.assertFalse([l for l in lines if "info message" in l or "init warning" in l])
        self.assertTrue([l for l in lines if "child error" in l])
        lines = self.run_logging(extra_env={"AWS_LAMBDA_LOG_LEVEL": "TRACE"})
        self.assertTrue([l for l in lines if l.startswith("[DEBUG]") and "debug hidden" in l])

    def test_logging_imported_only_inside_handler(self):
        api = self.new_api()
        api.add_event("req-lazy", {})
        proc = self.start("lazy_logging_app.handler", api)
        posts = api.wait_for_posts(1)
        out, err = self.stop(proc)
        self.assertEqual(json.loads(posts[0]["body"]), 1)  # exactly one root handler
        self.assertTrue([l for l in self.lines(out)
                         if re.fullmatch(r"\[INFO\]\t%s\treq-lazy\tlazy info" % TS, l)], out)


if __name__ == "__main__":
    unittest.main()
