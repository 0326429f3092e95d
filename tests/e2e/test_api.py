"""The Lambda API as the SDKs and the aws CLI use it: control plane, invoke, errors, persistence."""

import base64
import datetime
import hashlib
import json
import os
import subprocess
import threading
import time
from unittest import mock

import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from conftest import (PER_TENANT, PROBE_PY, REGION, ROLE, _aws_executable, client_for, error_of,
                      http_request, invoke_json, make_lambda_client, poll, probe_zip, zip_files)

MB = 1024 * 1024
ACCOUNT = "000000000000"


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def version_code(tag: str) -> bytes:
    """A function that says which code it is and what its context says about the version."""
    return zip_files({"v.py": (
        "def handler(event, context):\n"
        f"    return {{'code': {tag!r}, 'version': context.function_version,\n"
        "            'arn': context.invoked_function_arn}\n"
    )})


def json_payload(size: int, **members) -> bytes:
    """A JSON object of exactly `size` bytes: `members` plus padding."""
    empty = len(json.dumps({**members, "pad": ""}).encode())
    body = json.dumps({**members, "pad": "x" * (size - empty)}).encode()
    assert len(body) == size
    return body


def client_error(call, *args, **kwargs) -> tuple[int, str, str, dict]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call(*args, **kwargs)
    return (*error_of(e), e.value.response)


# --------------------------------------------------------------------------------------------
# Control plane
# --------------------------------------------------------------------------------------------


def test_function_lifecycle(lambda_client, unique_name):
    code = probe_zip()
    name = unique_name()
    created = lambda_client.create_function(
        FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="probe.handler",
        Code={"ZipFile": code}, Description="lifecycle test", Timeout=5, MemorySize=256)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    expected = {
        "FunctionName": name,
        "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "Runtime": "python3.11", "Role": ROLE, "Handler": "probe.handler",
        "Description": "lifecycle test", "Timeout": 5, "MemorySize": 256,
        "Version": "$LATEST", "State": "Active", "LastUpdateStatus": "Successful",
        "CodeSize": len(code), "CodeSha256": sha256_b64(code), "PackageType": "Zip",
    }
    assert {k: created.get(k) for k in expected} == expected
    assert "TenancyConfig" not in created

    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
    got = lambda_client.get_function(FunctionName=name)
    assert {k: got["Configuration"].get(k) for k in expected} == expected
    assert got["Configuration"]["RevisionId"] == created["RevisionId"]
    # The code location is a working (presigned) URL for the very bytes uploaded.
    download = http_request("GET", got["Code"]["Location"])
    assert download.status == 200
    assert download.body == code

    config = lambda_client.get_function_configuration(FunctionName=name)
    assert {k: config.get(k) for k in expected} == expected

    result, resp = invoke_json(lambda_client, name, {"op": "count"})
    assert resp["StatusCode"] == 200 and result["memory"] == 1

    deleted = lambda_client.delete_function(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call, kwargs in [
        (lambda_client.get_function, {}),
        (lambda_client.get_function_configuration, {}),
        (lambda_client.invoke, {"Payload": b"{}"}),
        (lambda_client.delete_function, {}),
    ]:
        status, code_, message, _ = client_error(call, FunctionName=name, **kwargs)
        assert (status, code_) == (404, "ResourceNotFoundException"), call
        assert name in message


def test_list_functions_paginates(lambda_client, make_function, aws):
    names = {make_function(probe_zip())["FunctionName"] for _ in range(3)}

    first = lambda_client.list_functions(MaxItems=1)
    assert len(first["Functions"]) == 1
    assert first.get("NextMarker")

    # Following the markers by hand visits every function once.
    seen, marker = [], None
    while True:
        page = lambda_client.list_functions(MaxItems=1, **({"Marker": marker} if marker else {}))
        assert len(page["Functions"]) <= 1
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert len(seen) == len(set(seen))
    assert names <= set(seen)

    # The SDK's paginator does the same with pages of two.
    pages = list(lambda_client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}))
    listed = [f["FunctionName"] for p in pages for f in p["Functions"]]
    assert sorted(listed) == sorted(seen)
    assert len(pages) >= 2 and all(len(p["Functions"]) <= 2 for p in pages)

    # And so does the CLI.
    rc, out, err = aws("lambda", "list-functions", "--max-items", "1")
    assert rc == 0, err
    one = json.loads(out)
    assert len(one["Functions"]) == 1 and one.get("NextToken")
    rc, out, err = aws("lambda", "list-functions", "--max-items", "1", "--starting-token", one["NextToken"])
    assert rc == 0, err
    two = json.loads(out)
    assert len(two["Functions"]) == 1
    assert two["Functions"][0]["FunctionName"] != one["Functions"][0]["FunctionName"]


def test_update_function_code(lambda_client, make_function):
    created = make_function(version_code("one"), handler="v.handler")
    name = created["FunctionName"]
    assert invoke_json(lambda_client, name)[0]["code"] == "one"

    new_code = version_code("two")
    updated = lambda_client.update_function_code(FunctionName=name, ZipFile=new_code)
    assert updated["CodeSha256"] == sha256_b64(new_code) != created["CodeSha256"]
    assert updated["CodeSize"] == len(new_code)
    assert updated["RevisionId"] != created["RevisionId"]
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke_json(lambda_client, name)[0]["code"] == "two"

    # A stale RevisionId is refused and changes nothing.
    status, code, _, _ = client_error(lambda_client.update_function_code, FunctionName=name,
                                      ZipFile=version_code("three"), RevisionId=created["RevisionId"])
    assert (status, code) == (412, "PreconditionFailedException")
    assert invoke_json(lambda_client, name)[0]["code"] == "two"


def test_update_function_configuration(lambda_client, make_function):
    name = make_function(probe_zip(), Environment={"Variables": {"GREETING": "hello"}})["FunctionName"]
    assert invoke_json(lambda_client, name, {"op": "getenv", "name": "GREETING"})[0]["value"] == "hello"

    updated = lambda_client.update_function_configuration(
        FunctionName=name, Timeout=7, MemorySize=384, Description="updated",
        Environment={"Variables": {"GREETING": "bonjour", "SECOND": "two words"}})
    assert (updated["Timeout"], updated["MemorySize"], updated["Description"]) == (7, 384, "updated")
    assert updated["Environment"]["Variables"] == {"GREETING": "bonjour", "SECOND": "two words"}
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)

    config = lambda_client.get_function_configuration(FunctionName=name)
    assert (config["Timeout"], config["MemorySize"]) == (7, 384)

    assert invoke_json(lambda_client, name, {"op": "getenv", "name": "GREETING"})[0]["value"] == "bonjour"
    assert invoke_json(lambda_client, name, {"op": "getenv", "name": "SECOND"})[0]["value"] == "two words"
    ctx = invoke_json(lambda_client, name, {"op": "context"})[0]
    assert int(ctx["memory_limit_in_mb"]) == 384
    assert ctx["env_memory"] == "384"
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    # The deadline follows the new Timeout.
    assert 5000 < ctx["remaining_ms"] <= 7000, ctx

    # Removing the variables.
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {}})
    assert invoke_json(lambda_client, name, {"op": "getenv", "name": "GREETING"})[0]["value"] is None


def test_publish_version_and_invoke_qualifiers(lambda_client, make_function):
    created = make_function(version_code("one"), handler="v.handler")
    name = created["FunctionName"]
    arn = created["FunctionArn"]

    v1 = lambda_client.publish_version(FunctionName=name)
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (v1["Version"], v1["FunctionArn"]) == ("1", f"{arn}:1")
    assert v1["CodeSha256"] == created["CodeSha256"]
    # Nothing changed since: publishing again gives the same version back.
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"

    lambda_client.update_function_code(FunctionName=name, ZipFile=version_code("two"))
    versions = lambda_client.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    assert lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")["Version"] == "1"

    def call(**kwargs):
        result, resp = invoke_json(lambda_client, **kwargs)
        assert "FunctionError" not in resp, result
        return result, resp["ExecutedVersion"], resp["ResponseMetadata"]["HTTPHeaders"]["x-amz-executed-version"]

    assert call(name=name, Qualifier="1") == ({"code": "one", "version": "1", "arn": f"{arn}:1"}, "1", "1")
    assert call(name=f"{name}:1") == ({"code": "one", "version": "1", "arn": f"{arn}:1"}, "1", "1")
    latest = {"code": "two", "version": "$LATEST", "arn": f"{arn}:$LATEST"}
    assert call(name=name, Qualifier="$LATEST") == (latest, "$LATEST", "$LATEST")
    result, executed, _ = call(name=name)
    assert (result["code"], result["version"], executed) == ("two", "$LATEST", "$LATEST")

    assert lambda_client.publish_version(FunctionName=name)["Version"] == "2"
    pages = list(lambda_client.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 1}))
    assert [v["Version"] for p in pages for v in p["Versions"]] == ["$LATEST", "1", "2"]
    assert len(pages) == 3
    assert call(name=name, Qualifier="2")[0]["code"] == "two"

    status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name, Qualifier="9")
    assert (status, code) == (404, "ResourceNotFoundException")

    lambda_client.delete_function(FunctionName=name, Qualifier="1")
    status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name, Qualifier="1")
    assert (status, code) == (404, "ResourceNotFoundException")
    assert call(name=name, Qualifier="2")[0]["code"] == "two"


def test_function_concurrency(lambda_client, make_function):
    name = make_function(probe_zip())["FunctionName"]
    before = lambda_client.get_account_settings()["AccountLimit"]
    assert "ReservedConcurrentExecutions" not in lambda_client.get_function_concurrency(FunctionName=name)

    put = lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert put["ReservedConcurrentExecutions"] == 5
    assert lambda_client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lambda_client.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    during = lambda_client.get_account_settings()["AccountLimit"]
    assert during["UnreservedConcurrentExecutions"] == before["UnreservedConcurrentExecutions"] - 5

    # Zero reserved concurrency: the function is throttled.
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    status, code, _, resp = client_error(lambda_client.invoke, FunctionName=name, Payload=b"{}")
    assert (status, code) == (429, "TooManyRequestsException")
    assert resp.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", resp

    # More than the account can give away is refused.
    status, code, _, _ = client_error(lambda_client.put_function_concurrency, FunctionName=name,
                                      ReservedConcurrentExecutions=before["ConcurrentExecutions"])
    assert (status, code) == (400, "InvalidParameterValueException")

    deleted = lambda_client.delete_function_concurrency(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "ReservedConcurrentExecutions" not in lambda_client.get_function_concurrency(FunctionName=name)
    assert "Concurrency" not in lambda_client.get_function(FunctionName=name)
    after = lambda_client.get_account_settings()["AccountLimit"]
    assert after["UnreservedConcurrentExecutions"] == before["UnreservedConcurrentExecutions"]
    assert invoke_json(lambda_client, name, {"op": "count"})[0]["memory"] == 1


def test_account_settings(lambda_client, make_function):
    before = lambda_client.get_account_settings()
    limit = before["AccountLimit"]
    assert limit["ConcurrentExecutions"] == 64  # `condo serve` default --max-concurrency
    assert 0 < limit["UnreservedConcurrentExecutions"] <= limit["ConcurrentExecutions"]
    assert limit["CodeSizeZipped"] == 50 * MB
    assert limit["CodeSizeUnzipped"] == 250 * MB
    created = make_function(probe_zip())
    after = lambda_client.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["TotalCodeSize"] == before["AccountUsage"]["TotalCodeSize"] + created["CodeSize"]


# --------------------------------------------------------------------------------------------
# Control-plane errors
# --------------------------------------------------------------------------------------------


def test_duplicate_create_is_a_conflict(lambda_client, make_function, aws, tmp_path):
    created = make_function(probe_zip())
    name = created["FunctionName"]
    status, code, message, _ = client_error(
        lambda_client.create_function, FunctionName=name, Runtime="nodejs20.x", Role=ROLE,
        Handler="index.handler", Code={"ZipFile": probe_zip()})
    assert (status, code) == (409, "ResourceConflictException")
    assert name in message

    code_file = tmp_path / "f.zip"
    code_file.write_bytes(probe_zip())
    rc, _, err = aws("lambda", "create-function", "--function-name", name, "--runtime", "python3.11",
                     "--role", ROLE, "--handler", "probe.handler", "--zip-file", f"fileb://{code_file}")
    assert rc != 0 and "ResourceConflictException" in err, err
    # The original is untouched.
    assert lambda_client.get_function_configuration(FunctionName=name)["RevisionId"] == created["RevisionId"]


@pytest.mark.parametrize("runtime", [
    "java21",
    "python3.99",
    "nodejs99.x",
])
def test_unsupported_runtime_lists_the_supported_ones(runtime, condo, lambda_client, unique_name):
    name = unique_name()
    status, code, message, _ = client_error(
        lambda_client.create_function, FunctionName=name, Runtime=runtime, Role=ROLE,
        Handler="probe.handler", Code={"ZipFile": probe_zip()})
    assert status == 400, message
    assert code in ("InvalidParameterValueException", "ValidationException")
    assert runtime in message
    status, code, _, _ = client_error(lambda_client.get_function, FunctionName=name)
    assert status == 404
    assert condo.runtimes, "the server logged no runtimes line"
    missing = [r for r in condo.runtimes if r not in message]
    assert not missing, f"message does not list {missing}: {message}"


def test_reserved_environment_variables_are_refused(lambda_client, make_function, unique_name):
    name = unique_name()
    status, code, message, _ = client_error(
        lambda_client.create_function, FunctionName=name, Runtime="python3.11", Role=ROLE,
        Handler="probe.handler", Code={"ZipFile": probe_zip()},
        Environment={"Variables": {"AWS_REGION": "eu-west-1", "MINE": "ok"}})
    assert (status, code) == (400, "InvalidParameterValueException")
    assert "AWS_REGION" in message and "MINE" not in message
    assert client_error(lambda_client.get_function, FunctionName=name)[0] == 404

    existing = make_function(probe_zip(), Environment={"Variables": {"MINE": "ok"}})["FunctionName"]
    status, code, message, _ = client_error(
        lambda_client.update_function_configuration, FunctionName=existing,
        Environment={"Variables": {"AWS_LAMBDA_FUNCTION_NAME": "spoofed"}})
    assert (status, code) == (400, "InvalidParameterValueException")
    assert "AWS_LAMBDA_FUNCTION_NAME" in message
    config = lambda_client.get_function_configuration(FunctionName=existing)
    assert config["Environment"]["Variables"] == {"MINE": "ok"}
    value = invoke_json(lambda_client, existing, {"op": "getenv", "name": "AWS_LAMBDA_FUNCTION_NAME"})[0]["value"]
    assert value == existing


@pytest.mark.parametrize("bad", [
    b"this is not a zip file",
    zip_files({"../escape.py": "x = 1\n", "probe.py": PROBE_PY}),
    zip_files({"lib/../../escape.py": "x = 1\n", "probe.py": PROBE_PY}),
    zip_files({"/etc/escape.py": "x = 1\n", "probe.py": PROBE_PY}),
], ids=["not-a-zip", "dotdot", "nested-dotdot", "absolute"])
def test_bad_code_packages_are_refused(bad, lambda_client, make_function, unique_name):
    name = unique_name()
    status, code, message, _ = client_error(
        lambda_client.create_function, FunctionName=name, Runtime="python3.11", Role=ROLE,
        Handler="probe.handler", Code={"ZipFile": bad})
    assert (status, code) == (400, "InvalidParameterValueException"), message
    assert client_error(lambda_client.get_function, FunctionName=name)[0] == 404

    existing = make_function(probe_zip())
    status, code, _, _ = client_error(lambda_client.update_function_code,
                                      FunctionName=existing["FunctionName"], ZipFile=bad)
    assert (status, code) == (400, "InvalidParameterValueException")
    config = lambda_client.get_function_configuration(FunctionName=existing["FunctionName"])
    assert config["CodeSha256"] == existing["CodeSha256"]


def _create_body(**overrides):
    body = {"FunctionName": "e2e-valid-name", "Runtime": "python3.11", "Role": ROLE,
            "Handler": "probe.handler", "Code": {"ZipFile": base64.b64encode(probe_zip()).decode()}}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("overrides,status,code", [
    ({"FunctionName": "bad name!"}, 400, "ValidationException"),
    ({"FunctionName": "x" * 65}, 400, "ValidationException"),
    ({"MemorySize": 100}, 400, "ValidationException"),
    ({"MemorySize": 10241}, 400, "ValidationException"),
    ({"Timeout": 0}, 400, "ValidationException"),
    ({"Timeout": 901}, 400, "ValidationException"),
    ({"Handler": None}, 400, "InvalidParameterValueException"),
    ({"Role": None}, 400, "InvalidParameterValueException"),
    ({"Role": "not-an-arn"}, 400, "ValidationException"),
    ({"Code": {}}, 400, "InvalidParameterValueException"),
    ({"Code": {"ZipFile": "!!! not base64 !!!"}}, 400, "InvalidParameterValueException"),
    ({"Environment": {"Variables": {"BIG": "x" * 5000}}}, 400, "ValidationException"),
    ({"Environment": {"Variables": {"1BAD": "x"}}}, 400, "ValidationException"),
], ids=["name-pattern", "name-length", "memory-low", "memory-high", "timeout-low", "timeout-high",
        "no-handler", "no-role", "bad-role", "no-code", "code-not-base64", "env-over-4kb", "env-bad-key"])
def test_invalid_create_requests_are_refused(overrides, status, code, signed_request, lambda_client, unique_name):
    name = overrides.get("FunctionName") or unique_name()
    resp = signed_request("POST", "/2015-03-31/functions", _create_body(**{**overrides, "FunctionName": name}))
    assert (resp.status, resp.error_type) == (status, code), resp
    assert resp.message, resp
    if resp.status == 400 and name.startswith("e2e-"):
        assert client_error(lambda_client.get_function, FunctionName=name)[0] == 404


def test_function_addressing(lambda_client, make_function):
    created = make_function(probe_zip())
    name, arn = created["FunctionName"], created["FunctionArn"]
    lambda_client.publish_version(FunctionName=name)
    for ref in (arn, f"{ACCOUNT}:function:{name}", f"{arn}:1", f"{name}:$LATEST"):
        result, resp = invoke_json(lambda_client, ref, {"op": "context"})
        assert "FunctionError" not in resp, (ref, result)
        assert result["function_name"] == name, ref

    cases = [
        ({"FunctionName": f"arn:aws:lambda:{REGION}:111111111111:function:{name}"}, 404, "ResourceNotFoundException"),
        ({"FunctionName": f"{name}:1", "Qualifier": "2"}, 400, "InvalidParameterValueException"),
        ({"FunctionName": name, "Qualifier": "no-such-alias"}, 404, "ResourceNotFoundException"),
    ]
    for kwargs, status, code in cases:
        assert client_error(lambda_client.invoke, **kwargs)[:2] == (status, code), kwargs
    status, code, _, _ = client_error(lambda_client.delete_function, FunctionName=name, Qualifier="$LATEST")
    assert (status, code) == (400, "InvalidParameterValueException")
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["Version"] == "$LATEST"


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


def test_wrong_secret_is_an_invalid_signature(endpoint, credentials, lambda_client):
    client = make_lambda_client(endpoint, credentials.access_key, credentials.secret_key[::-1])
    for call, kwargs in [(client.list_functions, {}), (client.get_account_settings, {}),
                         (client.invoke, {"FunctionName": "anything", "Payload": b"{}"})]:
        status, code, _, _ = client_error(call, **kwargs)
        assert (status, code) == (403, "InvalidSignatureException"), call
    # The right secret works (so the refusals above are about the secret).
    assert "Functions" in lambda_client.list_functions(MaxItems=1)


def test_unknown_access_key_is_unrecognized(endpoint, credentials):
    client = make_lambda_client(endpoint, "AKIAUNKNOWNUNKNOWN00", credentials.secret_key)
    status, code, _, _ = client_error(client.list_functions)
    assert (status, code) == (403, "UnrecognizedClientException")


def test_the_cli_with_a_wrong_secret_is_refused(aws_environ):
    env = dict(aws_environ, AWS_SECRET_ACCESS_KEY="wrong" + aws_environ["AWS_SECRET_ACCESS_KEY"])
    out = subprocess.run([_aws_executable(), "lambda", "list-functions"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode != 0
    assert "InvalidSignatureException" in out.stderr, out.stderr


def test_unsigned_request_is_refused(endpoint, lambda_client, make_function):
    name = make_function(probe_zip())["FunctionName"]
    for method, path, body in [
        ("GET", "/2015-03-31/functions", None),
        ("GET", f"/2015-03-31/functions/{name}", None),
        ("POST", f"/2015-03-31/functions/{name}/invocations", b"{}"),
        ("DELETE", f"/2015-03-31/functions/{name}", None),
    ]:
        resp = http_request(method, endpoint + path, body)
        assert resp.status == 403, (method, path, resp)
        assert resp.error_type, resp
    # The unsigned DELETE did nothing.
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


def test_tampered_and_stale_requests_are_refused(endpoint, credentials, make_function, signed_request):
    name = make_function(probe_zip(), Timeout=3)["FunctionName"]
    path = f"/2015-03-31/functions/{name}/configuration"

    # Signed for one body, sent with another.
    request = AWSRequest(method="PUT", url=endpoint + path, data=b'{"Timeout": 4}',
                         headers={"Content-Type": "application/json"})
    SigV4Auth(credentials, "lambda", REGION).add_auth(request)
    resp = http_request("PUT", request.url, b'{"Timeout": 9}', dict(request.headers.items()))
    assert (resp.status, resp.error_type) == (403, "InvalidSignatureException"), resp

    # Correctly signed, an hour ago.
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=1)
    request = AWSRequest(method="PUT", url=endpoint + path, data=b'{"Timeout": 9}',
                         headers={"Content-Type": "application/json"})
    with mock.patch("botocore.auth.get_current_datetime", return_value=past):
        SigV4Auth(credentials, "lambda", REGION).add_auth(request)
    resp = http_request("PUT", request.url, b'{"Timeout": 9}', dict(request.headers.items()))
    assert (resp.status, resp.error_type) == (403, "InvalidSignatureException"), resp

    # Neither got through; a good signature does.
    resp = signed_request("GET", path)
    assert resp.status == 200 and resp.json()["Timeout"] == 3
    resp = signed_request("PUT", path, {"Timeout": 4})
    assert resp.status == 200 and resp.json()["Timeout"] == 4


# --------------------------------------------------------------------------------------------
# Invoke
# --------------------------------------------------------------------------------------------


def test_invoke_payload_must_be_json(lambda_client, make_function):
    name = make_function(probe_zip())["FunctionName"]
    for payload in (b"{not json", b"\xff\xfe", b'{"a": 1} trailing'):
        status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name, Payload=payload)
        assert (status, code) == (400, "InvalidRequestContentException"), payload
    # Any JSON value is fine, and an empty payload is {}.
    assert invoke_json(lambda_client, name, None)[0]["memory"] == 1
    resp = lambda_client.invoke(FunctionName=name, Payload=b'[1, "two"]')
    assert json.loads(resp["Payload"].read())["event"] == [1, "two"]
    # Non-ASCII text survives the round trip.
    event = {"op": "echo", "name": "Zoë 日本 \u2603", "nested": {"emoji": "\U0001F600"}}
    assert invoke_json(lambda_client, name, event)[0]["event"] == event


def test_payload_size_limits(lambda_client, make_function):
    name = make_function(probe_zip(), MemorySize=512)["FunctionName"]

    status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name,
                                      Payload=json_payload(6 * MB + 1, op="count"))
    assert (status, code) == (413, "RequestTooLargeException")
    result, resp = invoke_json_raw(lambda_client, name, json_payload(6 * MB, op="count"))
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp, result
    assert result["memory"] == 1

    # Echoing it back makes a response over 6 MB: a function error, not a broken connection.
    result, resp = invoke_json_raw(lambda_client, name, json_payload(6 * MB, op="echo"))
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "Function.ResponseSizeTooLarge", result

    status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name, InvocationType="Event",
                                      Payload=json_payload(MB + 1, op="count"))
    assert (status, code) == (413, "RequestTooLargeException")
    resp = lambda_client.invoke(FunctionName=name, InvocationType="Event", Payload=json_payload(MB, op="count"))
    assert resp["StatusCode"] == 202


def invoke_json_raw(client, name, payload: bytes, **kwargs):
    resp = client.invoke(FunctionName=name, Payload=payload, **kwargs)
    return json.loads(resp["Payload"].read()), resp


def test_dry_run_validates_without_running(lambda_client, make_function):
    name = make_function(probe_zip())["FunctionName"]
    resp = lambda_client.invoke(FunctionName=name, InvocationType="DryRun", Payload=b'{"op": "count"}')
    assert resp["StatusCode"] == 204
    assert resp["Payload"].read() == b""
    isolated = make_function(probe_zip(), tenancy=True)["FunctionName"]
    resp = lambda_client.invoke(FunctionName=isolated, InvocationType="DryRun", TenantId="T")
    assert resp["StatusCode"] == 204
    # Nothing ran: the first real invocations find fresh environments.
    assert invoke_json(lambda_client, name, {"op": "count"})[0]["memory"] == 1
    assert invoke_json(lambda_client, isolated, {"op": "count"}, TenantId="T")[0]["memory"] == 1
    status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name + "-missing", InvocationType="DryRun")
    assert (status, code) == (404, "ResourceNotFoundException")


def peek(lambda_client, name, tenant):
    """The tenant's memory counter, read without changing it; None while throttled."""
    try:
        return invoke_json(lambda_client, name, {"op": "peek"}, TenantId=tenant)[0]["memory"]
    except botocore.exceptions.ClientError as e:
        if error_of(e)[1] == "TooManyRequestsException":
            return None
        raise


def isolated_single_environment(lambda_client, make_function) -> str:
    """A PER_TENANT probe with reserved concurrency 1, so each tenant has exactly one
    environment and a synchronous peek sees what an asynchronous invocation did."""
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    return name


def test_event_invocation_runs_in_the_background(lambda_client, make_function):
    name = isolated_single_environment(lambda_client, make_function)
    resp = lambda_client.invoke(FunctionName=name, InvocationType="Event", TenantId="AsyncTenant",
                                Payload=b'{"op": "count"}')
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    assert resp["ResponseMetadata"]["RequestId"]

    poll(lambda: peek(lambda_client, name, "AsyncTenant") == 1, 20, "the Event invocation to run")
    assert peek(lambda_client, name, "AsyncTenant") == 1
    assert peek(lambda_client, name, "OtherTenant") == 0


def test_failed_event_invocation_is_retried_twice(lambda_client, make_function):
    name = isolated_single_environment(lambda_client, make_function)
    resp = lambda_client.invoke(FunctionName=name, InvocationType="Event", TenantId="Retried",
                                Payload=b'{"op": "raise"}')
    assert resp["StatusCode"] == 202

    def attempts():
        n = peek(lambda_client, name, "Retried")
        assert n is None or n <= 3, f"{n} attempts"
        return n == 3

    poll(attempts, 30, "three attempts (the first and two retries)")
    # The server retries after 1 s (conftest.ASYNC_RETRY_DELAYS); give a fourth attempt longer than that.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert peek(lambda_client, name, "Retried") in (3, None)
        time.sleep(0.1)


def test_client_context_reaches_the_function(lambda_client, make_function):
    name = make_function(probe_zip())["FunctionName"]
    context = base64.b64encode(json.dumps({"custom": {"cart": "42"}, "env": {"os": "x"}}).encode()).decode()
    result, _ = invoke_json(lambda_client, name, {"op": "context"}, ClientContext=context)
    assert result["client_context"] == {"cart": "42"}
    status, code, _, _ = client_error(lambda_client.invoke, FunctionName=name, ClientContext="not base64!!")
    assert (status, code) == (400, "InvalidParameterValueException")


def _in_parallel(n, fn):
    results, threads = [None] * n, []
    for i in range(n):
        def run(i=i):
            try:
                results[i] = fn()
            except Exception as e:  # noqa: BLE001 (reported by the caller)
                results[i] = e
        threads.append(threading.Thread(target=run))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_concurrent_invocations_of_one_tenant_scale_out(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    started = time.monotonic()
    results = _in_parallel(3, lambda: invoke_json(lambda_client, name, {"op": "sleep", "seconds": 1}, TenantId="Busy")[0])
    took = time.monotonic() - started
    assert all(isinstance(r, dict) for r in results), results
    assert {r["tenant"] for r in results} == {"Busy"}
    assert len({r["env"] for r in results}) == 3, "concurrent invocations shared an environment"
    assert took < 2.5, f"3 x 1 s in parallel took {took:.2f} s"


def test_reserved_concurrency_throttles_the_excess(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)

    def one(tenant):
        try:
            return invoke_json(lambda_client, name, {"op": "sleep", "seconds": 1}, TenantId=tenant)[0]
        except botocore.exceptions.ClientError as e:
            return e.response

    results = _in_parallel(2, lambda: one(f"T{threading.get_ident()}"))
    ok = [r for r in results if "env" in r]
    throttled = [r for r in results if "Error" in r]
    assert len(ok) == 1 and len(throttled) == 1, results
    assert throttled[0]["Error"]["Code"] == "TooManyRequestsException"
    assert throttled[0]["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled[0].get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_new_code_or_a_recreated_function_never_reuses_environments(lambda_client, make_function):
    created = make_function(probe_zip(), tenancy=True)
    name = created["FunctionName"]
    first, _ = invoke_json(lambda_client, name, {"op": "count"}, TenantId="A")
    assert invoke_json(lambda_client, name, {"op": "count"}, TenantId="A")[0]["memory"] == 2

    lambda_client.update_function_code(FunctionName=name, ZipFile=probe_zip(**{"extra.txt": "v2"}))
    second, _ = invoke_json(lambda_client, name, {"op": "count"}, TenantId="A")
    assert (second["memory"], second["env"] != first["env"]) == (1, True)

    lambda_client.delete_function(FunctionName=name)
    lambda_client.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="probe.handler",
                                  Code={"ZipFile": probe_zip()}, TenancyConfig=PER_TENANT)
    third, _ = invoke_json(lambda_client, name, {"op": "count"}, TenantId="A")
    assert third["memory"] == 1
    assert third["env"] not in (first["env"], second["env"])


def test_log_tail(lambda_client, make_function, aws):
    name = make_function(probe_zip())["FunctionName"]
    text = "hello from the probe, 1234"
    result, resp = invoke_json(lambda_client, name, {"op": "print", "text": text}, LogType="Tail")
    request_id = resp["ResponseMetadata"]["RequestId"]
    log = base64.b64decode(resp["LogResult"]).decode()
    lines = log.splitlines()
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST", log
    assert text in lines
    assert f"END RequestId: {request_id}" in lines
    report = [line for line in lines if line.startswith(f"REPORT RequestId: {request_id}\t")]
    assert len(report) == 1, log
    assert "\tDuration: " in report[0] and "\tBilled Duration: " in report[0]
    assert "\tMemory Size: 128 MB\t" in report[0]
    assert lines.index(f"START RequestId: {request_id} Version: $LATEST") < lines.index(text) \
        < lines.index(f"END RequestId: {request_id}")

    _, resp = invoke_json(lambda_client, name, {"op": "print", "text": text})
    assert "LogResult" not in resp

    # Only the last 4 KB come back, ending with the REPORT line.
    _, resp = invoke_json(lambda_client, name, {"op": "print", "text": "y" * 10000}, LogType="Tail")
    tail = base64.b64decode(resp["LogResult"])
    assert 0 < len(tail) <= 4096
    assert tail.decode().rstrip("\n").splitlines()[-1].startswith("REPORT RequestId: ")

    rc, out, err = aws("lambda", "invoke", "--function-name", name, "--log-type", "Tail",
                       "--payload", json.dumps({"op": "print", "text": "via the cli"}), "/dev/null")
    assert rc == 0, err
    assert "via the cli" in base64.b64decode(json.loads(out)["LogResult"]).decode()


def test_python_exception_is_an_unhandled_function_error(lambda_client, make_function, aws, tmp_path):
    name = make_function(probe_zip())["FunctionName"]
    result, resp = invoke_json(lambda_client, name, {"op": "raise", "message": "no such order 42"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "ValueError"
    assert result["errorMessage"] == "no such order 42"
    # A handled error leaves the environment in service.
    after, resp = invoke_json(lambda_client, name, {"op": "count"})
    assert "FunctionError" not in resp and after["memory"] == 2

    outfile = tmp_path / "out.json"
    rc, out, err = aws("lambda", "invoke", "--function-name", name, "--payload", '{"op": "raise"}', str(outfile))
    assert rc == 0, err
    assert json.loads(out)["FunctionError"] == "Unhandled"
    assert json.loads(outfile.read_text())["errorType"] == "ValueError"


def test_node_throw_is_an_unhandled_function_error(lambda_client, make_function):
    code = zip_files({"index.mjs": "export const handler = async () => { throw new TypeError('node says no'); };\n"})
    name = make_function(code, runtime="nodejs20.x", handler="index.handler")["FunctionName"]
    result, resp = invoke_json(lambda_client, name, {})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert (result["errorType"], result["errorMessage"]) == ("TypeError", "node says no")


def test_timeout_kills_the_invocation_and_the_next_one_works(lambda_client, make_function):
    name = make_function(probe_zip(), Timeout=1)["FunctionName"]
    first, _ = invoke_json(lambda_client, name, {"op": "count"})
    started = time.monotonic()
    result, resp = invoke_json(lambda_client, name, {"op": "sleep", "seconds": 3})
    took = time.monotonic() - started
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "Sandbox.Timedout", result
    assert 0.9 <= took < 2.5, f"answered after {took:.2f} s for a 1 s timeout"
    after, resp = invoke_json(lambda_client, name, {"op": "count"})
    assert "FunctionError" not in resp
    assert after["env"] != first["env"], "the timed-out environment was reused"
    assert after["memory"] == 1


def test_crash_is_an_exit_error_and_the_next_invoke_gets_a_fresh_environment(lambda_client, make_function):
    name = make_function(probe_zip())["FunctionName"]
    first, _ = invoke_json(lambda_client, name, {"op": "count"})
    result, resp = invoke_json(lambda_client, name, {"op": "exit"})
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "Runtime.ExitError", result
    after, resp = invoke_json(lambda_client, name, {"op": "count"})
    assert "FunctionError" not in resp
    assert after["env"] != first["env"]
    assert after["memory"] == 1


@pytest.mark.parametrize("runtime,handler,files", [
    ("python3.11", "probe.handler", {"probe.py": "import no_such_module_e2e\n" + PROBE_PY}),
    ("nodejs20.x", "missing.handler", {"index.mjs": "export const handler = async () => 1;\n"}),
], ids=["python", "node"])
def test_init_error_is_an_import_module_error(runtime, handler, files, lambda_client, make_function):
    name = make_function(zip_files(files), runtime=runtime, handler=handler)["FunctionName"]
    for _ in range(2):  # every invocation retries the init, and fails the same way
        result, resp = invoke_json(lambda_client, name, {})
        assert resp["StatusCode"] == 200
        assert resp["FunctionError"] == "Unhandled"
        assert result["errorType"] == "Runtime.ImportModuleError", result
    if runtime.startswith("python"):
        assert "no_such_module_e2e" in result["errorMessage"]


@pytest.mark.parametrize("files,executable", [
    ({"README.txt": "no bootstrap here\n"}, ()),
    ({"bootstrap": "#!/bin/sh\nexit 0\n"}, ()),  # present but not executable
], ids=["missing", "not-executable"])
def test_provided_function_without_a_usable_bootstrap(files, executable, lambda_client, make_function):
    name = make_function(zip_files(files, executable), runtime="provided", handler=None)["FunctionName"]
    result, resp = invoke_json(lambda_client, name, {})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "Runtime.InvalidEntrypoint", result


# --------------------------------------------------------------------------------------------
# Server flags and shutdown (on private servers)
# --------------------------------------------------------------------------------------------


def test_max_concurrency_flag_throttles_the_account(start_server):
    server = start_server("--max-concurrency", "1")
    client = client_for(server)
    limit = client.get_account_settings()["AccountLimit"]
    assert (limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"]) == (1, 1)
    client.create_function(FunctionName="busy", Runtime="python3.11", Role=ROLE, Handler="probe.handler",
                           Code={"ZipFile": probe_zip()}, TenancyConfig=PER_TENANT, Timeout=10)

    def one(tenant):
        try:
            return invoke_json(client, "busy", {"op": "sleep", "seconds": 1}, TenantId=tenant)[0]
        except botocore.exceptions.ClientError as e:
            return e.response

    results = _in_parallel(2, lambda: one(f"T{threading.get_ident()}"))
    throttled = [r for r in results if "Error" in r]
    assert len(throttled) == 1, results
    assert throttled[0]["Error"]["Code"] == "TooManyRequestsException"
    assert throttled[0].get("Reason") == "ConcurrentInvocationLimitExceeded"
    # Nothing can be reserved out of a concurrency of one.
    status, code, _, _ = client_error(client.put_function_concurrency, FunctionName="busy",
                                      ReservedConcurrentExecutions=1)
    assert (status, code) == (400, "InvalidParameterValueException")


def test_condo_env_prints_the_servers_own_keys(condo, condo_env):
    from conftest import CONDO_BIN, clean_environ

    shell = dict(clean_environ(), AWS_ACCESS_KEY_ID="AKIAOTHERACCOUNT0000",
                 AWS_SECRET_ACCESS_KEY="some-other-secret")
    out = subprocess.run([CONDO_BIN, "env", "--data-dir", str(condo.data_dir), "--endpoint", condo.endpoint],
                         capture_output=True, text=True, timeout=30, env=shell)
    assert out.returncode == 0, out.stderr
    assert f"export AWS_ACCESS_KEY_ID={condo_env['AWS_ACCESS_KEY_ID']}" in out.stdout.splitlines()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_finishes_in_flight_invocations_and_leaves_no_process(start_server):
    server = start_server()
    client = client_for(server)
    client.create_function(FunctionName="slow", Runtime="python3.11", Role=ROLE, Handler="probe.handler",
                           Code={"ZipFile": probe_zip()}, TenancyConfig=PER_TENANT, Timeout=10)
    for tenant in ("Idle1", "Idle2"):  # warm, idle environments
        invoke_json(client, "slow", {"op": "count"}, TenantId=tenant)

    idle = _descendants(server.proc.pid)
    assert idle, "no environment processes under the server"

    results = []
    worker = threading.Thread(target=lambda: results.append(
        invoke_json(client, "slow", {"op": "sleep", "seconds": 2}, TenantId="Busy")[0]))
    worker.start()
    poll(lambda: _descendants(server.proc.pid) - idle, 10, "the busy environment to start")
    processes = _descendants(server.proc.pid)

    rc = server.stop()
    worker.join(timeout=30)
    assert rc == 0, server.log_tail()
    assert results and results[0]["tenant"] == "Busy" and "errorType" not in results[0], results
    left = sorted(p for p in processes if _alive(p))
    assert not left, f"processes of the stopped server still alive: {left}"


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------


def test_state_survives_a_restart(condo, lambda_client, make_function):
    created = make_function(version_code("one"), handler="v.handler", Environment={"Variables": {"KEPT": "yes"}})
    name = created["FunctionName"]
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"
    latest = lambda_client.update_function_code(FunctionName=name, ZipFile=version_code("two"))

    # An asynchronous invocation that cannot run yet (reserved concurrency 0) stays queued.
    queued = make_function(probe_zip(), tenancy=True)["FunctionName"]
    lambda_client.put_function_concurrency(FunctionName=queued, ReservedConcurrentExecutions=0)
    resp = lambda_client.invoke(FunctionName=queued, InvocationType="Event", TenantId="Queued",
                                Payload=b'{"op": "count"}')
    assert resp["StatusCode"] == 202

    condo.restart()

    config = lambda_client.get_function_configuration(FunctionName=name)
    assert config["CodeSha256"] == latest["CodeSha256"]
    assert config["RevisionId"] == latest["RevisionId"]
    assert config["Environment"]["Variables"] == {"KEPT": "yes"}
    assert [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]] \
        == ["$LATEST", "1"]
    assert invoke_json(lambda_client, name, Qualifier="1")[0]["code"] == "one"
    assert invoke_json(lambda_client, name)[0]["code"] == "two"
    assert lambda_client.get_function_configuration(FunctionName=queued)["TenancyConfig"] == PER_TENANT
    assert lambda_client.get_function_concurrency(FunctionName=queued)["ReservedConcurrentExecutions"] == 0

    # Let the queued invocation run, in the tenant's one environment.
    lambda_client.put_function_concurrency(FunctionName=queued, ReservedConcurrentExecutions=1)
    poll(lambda: peek(lambda_client, queued, "Queued") == 1, 20, "the queued Event invocation to run")
