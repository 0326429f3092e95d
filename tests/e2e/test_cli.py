"""The human CLI (`condo deploy`, `invoke`, `functions`) against the real server."""
import json
import subprocess

from conftest import CONDO_BIN, REPO, clean_environ


def condo_cli(condo, *args):
    env = dict(clean_environ(), CONDO_ENDPOINT=condo.endpoint, CONDO_DATA_DIR=str(condo.data_dir))
    return subprocess.run([CONDO_BIN, *args], env=env, capture_output=True, text=True, timeout=60)


def test_deploy_invoke_and_list_with_the_condo_cli(condo, unique_name):
    name = unique_name("cli")
    out = condo_cli(condo, "deploy", str(REPO / "examples" / "python-counter"), "--name", name,
                    "--runtime", "python3.11", "--handler", "app.handler", "--tenant-isolation")
    assert out.returncode == 0, out.stderr
    assert f"deployed {name}" in out.stdout

    answers = []
    for tenant in ["BlueTenant", "BlueTenant", "GreenTenant"]:
        out = condo_cli(condo, "invoke", name, "--tenant-id", tenant)
        assert out.returncode == 0, out.stderr
        answers.append(json.loads(out.stdout))
    assert [(a["tenant"], a["memory"]) for a in answers] == [("BlueTenant", 1), ("BlueTenant", 2), ("GreenTenant", 1)]

    # --log prints the invocation's tail (START ... REPORT) on stderr.
    out = condo_cli(condo, "invoke", name, "--tenant-id", "BlueTenant", "--log")
    assert out.returncode == 0, out.stderr
    assert "START RequestId:" in out.stderr and "REPORT RequestId:" in out.stderr

    out = condo_cli(condo, "functions")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(name + " "))
    assert "python3.11" in row and "PER_TENANT" in row
    assert out.stdout.splitlines()[0].split()[:2] == ["NAME", "RUNTIME"]


def test_cli_errors_are_clear(condo, unique_name):
    name = unique_name("clierr")
    out = condo_cli(condo, "deploy", str(REPO / "examples" / "python-counter"), "--name", name,
                    "--runtime", "python3.11", "--handler", "app.handler", "--tenant-isolation")
    assert out.returncode == 0, out.stderr

    # A PER_TENANT function invoked without a tenant: refused, and the CLI says why.
    out = condo_cli(condo, "invoke", name)
    assert out.returncode != 0
    assert "InvalidParameterValueException" in out.stderr and "tenant" in out.stderr

    # Tenancy is fixed at creation: redeploying without isolation is refused before anything changes.
    out = condo_cli(condo, "deploy", str(REPO / "examples" / "python-counter"), "--name", name,
                    "--runtime", "python3.11", "--handler", "app.handler")
    assert out.returncode != 0
    assert "tenant isolation" in out.stderr

    # A directory that does not exist, and a server that is not there.
    out = condo_cli(condo, "deploy", "/no/such/dir", "--name", name, "--runtime", "python3.11")
    assert out.returncode != 0 and "not a directory" in out.stderr
    env = dict(clean_environ(), CONDO_DATA_DIR=str(condo.data_dir))
    out = subprocess.run([CONDO_BIN, "functions", "--endpoint", "http://127.0.0.1:9"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "cannot reach condo" in out.stderr
