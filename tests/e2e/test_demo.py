"""The launch-talk demo, for every runtime: a counter in memory and one in /tmp, per tenant.

BlueTenant x5 -> 1..5; GreenTenant -> 1; BlueTenant -> 6; OrangeTenant -> 1. Once with the real
`aws` CLI exactly as the talk shows it, once with boto3.
"""

import json

import pytest

from conftest import PER_TENANT, ROLE, example_zip, invoke_json

RUNTIMES = {
    "node": ("nodejs20.x", "index.handler", "node-counter"),
    "python": ("python3.11", "app.handler", "python-counter"),
    "shell": ("provided", None, "shell-counter"),
}

# (tenant, expected memory and disk counter)
SCRIPT = [("BlueTenant", n) for n in range(1, 6)] + [
    ("GreenTenant", 1),
    ("BlueTenant", 6),
    ("OrangeTenant", 1),
]


@pytest.mark.parametrize("kind", list(RUNTIMES))
def test_demo_with_the_aws_cli(kind, aws, unique_name, tmp_path):
    runtime, handler, example = RUNTIMES[kind]
    name = unique_name()
    code = tmp_path / "function.zip"
    code.write_bytes(example_zip(example))
    args = ["lambda", "create-function", "--function-name", name, "--runtime", runtime,
            "--role", ROLE, "--zip-file", f"fileb://{code}",
            "--tenancy-config", '{"TenantIsolationMode":"PER_TENANT"}']
    if handler:
        args += ["--handler", handler]
    rc, out, err = aws(*args)
    assert rc == 0, err
    created = json.loads(out)
    assert created["FunctionName"] == name
    assert created["Runtime"] == runtime
    assert created["TenancyConfig"] == PER_TENANT
    assert created["State"] == "Active"

    try:
        for i, (tenant, count) in enumerate(SCRIPT):
            outfile = tmp_path / f"out-{i}.json"
            rc, out, err = aws("lambda", "invoke", "--function-name", name, "--tenant-id", tenant, str(outfile))
            assert rc == 0, err
            meta = json.loads(out)
            assert meta["StatusCode"] == 200
            assert meta["ExecutedVersion"] == "$LATEST"
            assert "FunctionError" not in meta, outfile.read_text()
            result = json.loads(outfile.read_text())
            assert result == {"tenant": tenant, "memory": count, "disk": count}, (i, tenant)
    finally:
        rc, _, err = aws("lambda", "delete-function", "--function-name", name)
        assert rc == 0, err


@pytest.mark.parametrize("kind", list(RUNTIMES))
def test_demo_with_boto3(kind, lambda_client, make_function):
    runtime, handler, example = RUNTIMES[kind]
    config = make_function(example_zip(example), runtime=runtime, handler=handler, tenancy=True)
    name = config["FunctionName"]
    for i, (tenant, count) in enumerate(SCRIPT):
        result, resp = invoke_json(lambda_client, name, {}, TenantId=tenant)
        assert resp["StatusCode"] == 200
        assert "FunctionError" not in resp, result
        assert resp["ExecutedVersion"] == "$LATEST"
        assert result == {"tenant": tenant, "memory": count, "disk": count}, (i, tenant)


@pytest.mark.parametrize("kind", list(RUNTIMES))
def test_examples_without_tenancy_share_one_environment(kind, lambda_client, make_function):
    runtime, handler, example = RUNTIMES[kind]
    name = make_function(example_zip(example), runtime=runtime, handler=handler)["FunctionName"]
    for count in (1, 2, 3):
        result, resp = invoke_json(lambda_client, name, {})
        assert "FunctionError" not in resp, result
        assert result.get("tenant") is None
        assert (result["memory"], result["disk"]) == (count, count)
