"""Every tenancy rule of the Invoke and function APIs (see reference/lambda-wire-spec.md)."""

import json
import time

import botocore.exceptions
import pytest

from conftest import PER_TENANT, PROBE_PY, ROLE, b64, error_of, invoke_json, probe_zip, zip_files

# A function whose every environment takes two seconds to initialise: an invocation answered
# faster than that cannot have started one.
SLOW_INIT = "import time\ntime.sleep(2)\nfrom probe import handler\n"
SLOW_INIT_S = 2.0

ALLOWED_TENANTS = [
    "Blue Tenant:1",
    "a.b_c:d/e=f+g-h@i j",
    "A  B",  # runs of spaces are collapsed by SigV4 canonicalisation, not in the value
    "0",
    "@/=+",
    "x" * 256,
]


def test_missing_tenant_id_is_refused_and_nothing_runs(lambda_client, make_function, aws, tmp_path):
    name = make_function(probe_zip(**{"slow.py": SLOW_INIT}), handler="slow.handler", tenancy=True)["FunctionName"]

    for invocation_type in ("RequestResponse", "Event", "DryRun"):
        started = time.monotonic()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lambda_client.invoke(FunctionName=name, Payload=b"{}", InvocationType=invocation_type)
        took = time.monotonic() - started
        status, code, message = error_of(e)
        assert (status, code) == (400, "InvalidParameterValueException"), (invocation_type, message)
        assert "tenant" in message.lower(), message
        assert took < SLOW_INIT_S / 2, f"{invocation_type} took {took:.2f} s: something was started"

    rc, out, err = aws("lambda", "invoke", "--function-name", name, str(tmp_path / "out.json"))
    assert rc != 0
    assert "InvalidParameterValueException" in err, err
    assert not (tmp_path / "out.json").exists()

    # The same function with a tenant id does run, and pays for its cold start: the timing
    # above really tells "refused up front" from "ran".
    started = time.monotonic()
    result, _ = invoke_json(lambda_client, name, {"op": "count"}, TenantId="T1")
    assert time.monotonic() - started >= SLOW_INIT_S
    assert result["tenant"] == "T1" and result["memory"] == 1


def test_tenant_id_on_a_non_isolated_function_is_refused(lambda_client, make_function, aws, tmp_path):
    name = make_function(probe_zip())["FunctionName"]
    for invocation_type in ("RequestResponse", "Event", "DryRun"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lambda_client.invoke(FunctionName=name, Payload=b"{}", InvocationType=invocation_type,
                                 TenantId="BlueTenant")
        status, code, message = error_of(e)
        assert (status, code) == (400, "InvalidParameterValueException"), (invocation_type, message)
        assert "tenant" in message.lower(), message

    rc, _, err = aws("lambda", "invoke", "--function-name", name, "--tenant-id", "BlueTenant",
                     str(tmp_path / "out.json"))
    assert rc != 0
    assert "InvalidParameterValueException" in err, err

    # Without one it runs as usual.
    result, resp = invoke_json(lambda_client, name, {"op": "count"})
    assert "FunctionError" not in resp
    assert result["tenant"] is None


@pytest.mark.parametrize("tenant", ["bad#id", "x" * 257, "semi;colon"], ids=["hash", "257-chars", "semicolon"])
def test_malformed_tenant_id_is_a_validation_error(tenant, lambda_client, make_function, aws, tmp_path):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]

    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.invoke(FunctionName=name, Payload=b"{}", TenantId=tenant)
    status, code, message = error_of(e)
    assert (status, code) == (400, "ValidationException"), message
    assert "tenantId" in message, message

    outfile = tmp_path / "out.json"
    rc, _, err = aws("lambda", "invoke", "--function-name", name, "--tenant-id", tenant, str(outfile))
    assert rc != 0
    assert "ValidationException" in err, err
    assert not outfile.exists()


def test_allowed_tenant_ids_reach_the_handler_unchanged(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    envs = {}
    for tenant in ALLOWED_TENANTS:
        result, resp = invoke_json(lambda_client, name, {"op": "count"}, TenantId=tenant)
        assert "FunctionError" not in resp, result
        assert result["tenant"] == tenant
        assert result["memory"] == 1, f"{tenant!r} landed in an environment that had run before"
        envs[tenant] = result["env"]
    assert len(set(envs.values())) == len(ALLOWED_TENANTS), "two tenants shared an environment"

    # Each tenant keeps its own warm environment.
    for tenant in ALLOWED_TENANTS:
        result, _ = invoke_json(lambda_client, name, {"op": "count"}, TenantId=tenant)
        assert (result["tenant"], result["env"], result["memory"]) == (tenant, envs[tenant], 2)


def test_tenant_ids_differing_only_in_case_or_spacing_are_different_tenants(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    seen = set()
    for tenant in ("acme", "ACME", "Acme", "a b", "a  b"):
        result, _ = invoke_json(lambda_client, name, {"op": "count"}, TenantId=tenant)
        assert (result["tenant"], result["memory"]) == (tenant, 1)
        seen.add(result["env"])
    assert len(seen) == 5


def test_exactly_256_characters_with_the_cli(make_function, aws, tmp_path):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    tenant = ("Tenant 1:a.b/c=d+e-f@g_" * 12)[:256]
    assert len(tenant) == 256
    outfile = tmp_path / "out.json"
    rc, out, err = aws("lambda", "invoke", "--function-name", name, "--tenant-id", tenant, str(outfile))
    assert rc == 0, err
    assert json.loads(out)["StatusCode"] == 200
    assert json.loads(outfile.read_text())["tenant"] == tenant


def test_tenancy_config_cannot_be_changed_after_creation(lambda_client, make_function, signed_request):
    isolated = make_function(probe_zip(), tenancy=True, Timeout=3)["FunctionName"]
    shared = make_function(probe_zip(), Timeout=3)["FunctionName"]

    # The SDKs cannot even express this (TenancyConfig is not a member of the request); a raw
    # request can, and must get a clear refusal, with nothing applied.
    for name, body in [
        (isolated, {"TenancyConfig": PER_TENANT, "Timeout": 9}),
        (isolated, {"TenancyConfig": None, "Timeout": 9}),
        (shared, {"TenancyConfig": PER_TENANT, "Timeout": 9}),
    ]:
        resp = signed_request("PUT", f"/2015-03-31/functions/{name}/configuration", body)
        assert resp.status == 400, resp
        assert resp.error_type in ("InvalidParameterValueException", "ValidationException"), resp
        assert "TenancyConfig" in resp.message, resp

    after = lambda_client.get_function_configuration(FunctionName=isolated)
    assert after["TenancyConfig"] == PER_TENANT and after["Timeout"] == 3
    after = lambda_client.get_function_configuration(FunctionName=shared)
    assert "TenancyConfig" not in after and after["Timeout"] == 3

    # An ordinary raw update still works, so the refusal above is about TenancyConfig.
    resp = signed_request("PUT", f"/2015-03-31/functions/{isolated}/configuration", {"Timeout": 9})
    assert resp.status == 200, resp
    assert resp.json()["Timeout"] == 9
    assert resp.json()["TenancyConfig"] == PER_TENANT


def test_configuration_echoes_tenancy_config_only_for_isolated_functions(lambda_client, make_function):
    isolated = make_function(probe_zip(), tenancy=True)
    shared = make_function(probe_zip())
    assert isolated["TenancyConfig"] == PER_TENANT
    assert "TenancyConfig" not in shared

    for name, expected in [(isolated["FunctionName"], PER_TENANT), (shared["FunctionName"], None)]:
        views = [
            lambda_client.get_function_configuration(FunctionName=name),
            lambda_client.get_function(FunctionName=name)["Configuration"],
            lambda_client.publish_version(FunctionName=name),
            lambda_client.get_function_configuration(FunctionName=name, Qualifier="1"),
        ]
        listed = [f for page in lambda_client.get_paginator("list_functions").paginate()
                  for f in page["Functions"] if f["FunctionName"] == name]
        assert len(listed) == 1
        views += listed
        for view in views:
            assert view.get("TenancyConfig") == expected, (name, view)


@pytest.mark.parametrize("tenancy", [
    {"TenantIsolationMode": "SHARED"},
    {},
    "PER_TENANT",
    {"TenantIsolationMode": None},
], ids=["unknown-mode", "missing-mode", "not-an-object", "null-mode"])
def test_invalid_tenancy_config_at_creation_is_refused(tenancy, lambda_client, signed_request, unique_name):
    name = unique_name()
    body = {"FunctionName": name, "Runtime": "python3.11", "Role": ROLE, "Handler": "probe.handler",
            "Code": {"ZipFile": b64(probe_zip())}, "TenancyConfig": tenancy}
    resp = signed_request("POST", "/2015-03-31/functions", body)
    assert resp.status == 400, resp
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.get_function(FunctionName=name)
    assert error_of(e)[:2] == (404, "ResourceNotFoundException")
    # A constraint violation in a well-formed body, not "unparseable JSON".
    assert resp.error_type in ("ValidationException", "InvalidParameterValueException"), resp
    assert any(w in resp.message for w in ("TenancyConfig", "TenantIsolationMode", "PER_TENANT")), resp


def test_non_isolated_function_shares_its_environment(lambda_client, make_function):
    name = make_function(zip_files({"probe.py": PROBE_PY}))["FunctionName"]
    results = [invoke_json(lambda_client, name, {"op": "count"})[0] for _ in range(4)]
    assert [r["memory"] for r in results] == [1, 2, 3, 4]
    assert len({r["env"] for r in results}) == 1
    assert all(r["tenant"] is None for r in results)


def test_an_environment_belongs_to_one_version_of_one_tenant(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"
    latest = [invoke_json(lambda_client, name, {"op": "count"}, TenantId="A")[0] for _ in range(2)]
    v1 = [invoke_json(lambda_client, name, {"op": "count"}, TenantId="A", Qualifier="1")[0] for _ in range(2)]
    assert [r["memory"] for r in latest] == [1, 2]
    assert [r["memory"] for r in v1] == [1, 2]
    assert latest[0]["env"] == latest[1]["env"] != v1[0]["env"] == v1[1]["env"]


# --------------------------------------------------------------------------------------------
# What a tenant's code can see: its own environment only
# --------------------------------------------------------------------------------------------

PROCESSES = """
import os
result = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            result.append(open('/proc/%s/cmdline' % pid, 'rb').read().replace(b'\\0', b' ').decode().strip())
        except OSError:
            pass
"""
SPAWN_LISTENER = """
import subprocess, sys
subprocess.Popen([sys.executable, '-c', 'import socket, time; s = socket.socket(); '
                  's.bind(("127.0.0.1", 8123)); s.listen(); time.sleep(37.5)'])
result = True
"""
CONNECT = """
import socket, time
deadline = time.monotonic() + 3
while True:
    try:
        socket.create_connection(('127.0.0.1', event['port']), timeout=1).close()
        result = 'connected'
        break
    except OSError as e:
        result = type(e).__name__
        if not event.get('wait') or time.monotonic() > deadline:
            break
        time.sleep(0.05)
"""
WRITE = """
import os
result = {}
for path in event['paths']:
    try:
        with open(path, 'w') as f:
            f.write('x')
        result[path] = 'written'
    except OSError as e:
        result[path] = type(e).__name__
"""


def run_py(client, name, tenant, code, **event):
    result, resp = invoke_json(client, name, {"op": "py", "code": code, **event}, TenantId=tenant)
    assert "FunctionError" not in resp, result
    return result["result"]


def test_tenants_cannot_see_each_others_processes_or_listeners(lambda_client, make_function, endpoint):
    name = make_function(probe_zip(), tenancy=True, Timeout=10)["FunctionName"]
    assert run_py(lambda_client, name, "A", SPAWN_LISTENER)
    assert run_py(lambda_client, name, "A", CONNECT, port=8123, wait=True) == "connected"
    assert any("37.5" in p for p in run_py(lambda_client, name, "A", PROCESSES))

    seen_by_b = run_py(lambda_client, name, "B", PROCESSES)
    assert not any("37.5" in p for p in seen_by_b), seen_by_b
    assert not any("condo" in p for p in seen_by_b), seen_by_b
    assert run_py(lambda_client, name, "B", CONNECT, port=8123) == "ConnectionRefusedError"
    # Nor the platform's own API on the host's loopback.
    api_port = int(endpoint.rsplit(":", 1)[1])
    assert run_py(lambda_client, name, "B", CONNECT, port=api_port) == "ConnectionRefusedError"


def test_code_runs_unprivileged_on_a_read_only_root(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True)["FunctionName"]
    ident = run_py(lambda_client, name, "A", "import os; result = [os.getuid(), os.getgid(), "
                   "[l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')]]")
    assert ident[0] != 0 and ident[1] != 0, ident
    assert ident[2] == ["NoNewPrivs:\t1\n"], ident
    written = run_py(lambda_client, name, "A", WRITE, paths=["/var/task/x", "/x", "/usr/x", "/etc/x", "/tmp/x"])
    assert written == {"/var/task/x": "OSError", "/x": "OSError", "/usr/x": "OSError", "/etc/x": "OSError",
                       "/tmp/x": "written"}


def test_memory_size_is_enforced(lambda_client, make_function):
    name = make_function(probe_zip(), tenancy=True, MemorySize=128, Timeout=10)["FunctionName"]
    result, resp = invoke_json(lambda_client, name, {"op": "py", "code": "big = b'x' * (400 * 1024 * 1024); result = len(big)"},
                               TenantId="Greedy")
    assert resp.get("FunctionError") == "Unhandled", result
    assert result["errorType"] == "Runtime.OutOfMemory", result
    after, resp = invoke_json(lambda_client, name, {"op": "count"}, TenantId="Greedy")
    assert "FunctionError" not in resp
