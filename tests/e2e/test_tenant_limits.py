"""Per-tenant concurrency caps: the `condo:tenant-max-concurrency` tag keeps one tenant of a
tenant-isolated function from taking the function's whole concurrency; its other tenants keep
running. Set and cleared with the stock TagResource / UntagResource, kept across a restart."""

import os
import threading
import time
from pathlib import Path

import botocore.exceptions
import pytest

from conftest import (PER_TENANT, ROLE, client_for, error_of, instance_cgroups, invoke_json, poll,
                      probe_zip)

TAG = "condo:tenant-max-concurrency"


def outcome(lambda_client, name, tenant, payload=None):
    """'ok', or the throttle reason of a TooManyRequestsException."""
    try:
        invoke_json(lambda_client, name, payload or {"op": "count"}, TenantId=tenant)
        return "ok"
    except botocore.exceptions.ClientError as e:
        assert error_of(e)[:2] == (429, "TooManyRequestsException"), e.response
        return e.response.get("Reason")


def sleep_invoke(lambda_client, name, tenant, seconds):
    invoke_json(lambda_client, name, {"op": "sleep", "seconds": seconds}, TenantId=tenant)


def hold(lambda_client, name, tenant, seconds):
    """Starts an invocation of `tenant` that stays in flight for `seconds`; returns its thread.
    It is retried while the tenant is at its cap (a probe may hold the place for a moment), so
    it does get in; the thread's `error` says if it never did."""
    def run():
        deadline = time.monotonic() + 20
        while True:
            try:
                sleep_invoke(lambda_client, name, tenant, seconds)
                return
            except botocore.exceptions.ClientError as e:
                if error_of(e)[1] != "TooManyRequestsException" or time.monotonic() > deadline:
                    thread.error = e
                    return
                time.sleep(0.02)
    thread = threading.Thread(target=run)
    thread.error = None
    thread.start()
    return thread


def join(*threads):
    for t in threads:
        t.join()
        assert t.error is None, t.error


def wait_until_throttled(lambda_client, name, tenant, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = outcome(lambda_client, name, tenant)
        if result != "ok":
            return result
        time.sleep(0.2)
    raise AssertionError(f"{tenant} was never throttled")


def all_at_once(lambda_client, name, tenant, n, seconds=1):
    """Runs `n` invocations of `tenant` at the same time; returns what each one got."""
    results = [None] * n

    def run(i):
        try:
            sleep_invoke(lambda_client, name, tenant, seconds)
            results[i] = "ok"
        except botocore.exceptions.ClientError as e:
            results[i] = e.response.get("Reason") or error_of(e)[1]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_capped_tenant_is_throttled_while_other_tenants_run(lambda_client, make_function, condo):
    fn = make_function(probe_zip(), tenancy=True, Timeout=60, Tags={TAG: "1"})
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {TAG: "1"}

    held = hold(lambda_client, name, "Noisy", 6)
    assert wait_until_throttled(lambda_client, name, "Noisy") == "TenantConcurrencyLimitExceeded"
    # The cap is per tenant: another tenant of the same function is served meanwhile.
    assert outcome(lambda_client, name, "Quiet") == "ok"
    assert outcome(lambda_client, name, "Noisy") == "TenantConcurrencyLimitExceeded"
    join(held)
    assert outcome(lambda_client, name, "Noisy") == "ok"

    # Raised to 2: two invocations in flight are allowed, the third is not.
    lambda_client.tag_resource(Resource=arn, Tags={TAG: "2"})
    two = [hold(lambda_client, name, "Noisy", 6) for _ in range(2)]
    assert wait_until_throttled(lambda_client, name, "Noisy") == "TenantConcurrencyLimitExceeded"
    join(*two)

    # Kept across a restart.
    lambda_client.tag_resource(Resource=arn, Tags={TAG: "1"})
    condo.restart()
    held = hold(lambda_client, name, "Noisy", 6)
    assert wait_until_throttled(lambda_client, name, "Noisy") == "TenantConcurrencyLimitExceeded"
    join(held)

    # Removed: the tenant may use the function's concurrency again.
    lambda_client.untag_resource(Resource=arn, TagKeys=[TAG])
    assert all_at_once(lambda_client, name, "Noisy", 3) == ["ok"] * 3


@pytest.mark.parametrize("value", ["0", "1001", "-1", "two", "", "1.5"])
def test_bad_cap_values_are_refused(value, lambda_client, make_function):
    fn = make_function(probe_zip(), tenancy=True)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.tag_resource(Resource=fn["FunctionArn"], Tags={TAG: value})
    status, code, message = error_of(e)
    assert (status, code) == (400, "InvalidParameterValueException"), message
    assert TAG in message
    assert lambda_client.list_tags(Resource=fn["FunctionArn"])["Tags"] == {}


def test_the_cap_needs_tenant_isolation_mode(lambda_client, make_function, unique_name):
    shared = make_function(probe_zip())
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.tag_resource(Resource=shared["FunctionArn"], Tags={TAG: "2"})
    status, code, message = error_of(e)
    assert (status, code) == (400, "InvalidParameterValueException"), message
    assert "tenant isolation" in message
    with pytest.raises(botocore.exceptions.ClientError) as e:
        make_function(probe_zip(), name=unique_name("created"), Tags={TAG: "2"})
    assert error_of(e)[:2] == (400, "InvalidParameterValueException")


def environment_weights(data_dir) -> list[int]:
    """The CPU weight (v1 `cpu.shares` or v2 `cpu.weight`) of each of the instance's sandbox
    groups that holds a running function (not a prepared sandbox, whose init step is condo)."""
    weights = []
    for instance in instance_cgroups(data_dir):
        for group in (g for g in instance.iterdir() if g.is_dir()):
            weight_file = next((group / f for f in ("cpu.shares", "cpu.weight") if (group / f).exists()), None)
            if weight_file is None:
                continue
            pids = (group / "cgroup.procs").read_text().split()
            commands = []
            for pid in pids:
                try:
                    commands.append(Path(f"/proc/{pid}/cmdline").read_bytes())
                except OSError:
                    pass
            if any(b"python" in c for c in commands):
                weights.append(int(weight_file.read_text()))
    return sorted(weights)


def test_a_tenant_that_scales_out_shares_one_environments_cpu_weight(start_server):
    """Fair scheduling: under contention, the three environments of a tenant that scaled out
    weigh together what the one environment of another tenant weighs."""
    server = start_server()
    client = client_for(server)
    client.create_function(FunctionName="fair", Runtime="python3.11", Role=ROLE,
                           Handler="probe.handler", Code={"ZipFile": probe_zip()},
                           TenancyConfig=PER_TENANT, Timeout=60)
    held = [hold(client, "fair", "Wide", 8) for _ in range(3)] + [hold(client, "fair", "Narrow", 8)]
    weights = poll(lambda: (lambda w: w if len(w) == 4 else None)(environment_weights(server.data_dir)),
                   30, "four running environments")
    wide, narrow = weights[:3], weights[3]
    assert len(set(wide)) == 1, weights
    # Integer division: the narrow tenant's weight is three of the wide tenant's, give or take.
    assert abs(narrow - 3 * wide[0]) <= 3, weights
    assert narrow > 2 * wide[0], weights
    join(*held)


AFFINITY_THEN_SLEEP = """
import os, time
result = sorted(os.sched_getaffinity(0))
time.sleep(event["seconds"])
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs two CPUs")
def test_under_contention_each_busy_environment_runs_on_one_cpu(start_server):
    """CPU placement: while more environments are busy than the host has CPUs, an environment
    that starts an invocation runs on one CPU; alone again, it may use them all."""
    cpus = sorted(os.sched_getaffinity(0))
    server = start_server()
    client = client_for(server)
    client.create_function(FunctionName="placed", Runtime="python3.11", Role=ROLE,
                           Handler="probe.handler", Code={"ZipFile": probe_zip()},
                           TenancyConfig=PER_TENANT, Timeout=60)
    tenants = [f"T{i}" for i in range(len(cpus) + 2)]
    seen = {}

    def run(tenant):
        out, _ = invoke_json(client, "placed", {"op": "py", "code": AFFINITY_THEN_SLEEP, "seconds": 3},
                             TenantId=tenant)
        seen[tenant] = out["result"]
    threads = [threading.Thread(target=run, args=(t,)) for t in tenants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == tenants, seen
    # Every environment started its invocation while the others ran: the first ones to start
    # (as many as there are CPUs) were free, the rest were each given one CPU.
    confined = [t for t, allowed in seen.items() if len(allowed) == 1]
    assert len(confined) >= 2, seen
    assert all(seen[t][0] in cpus for t in confined), seen
    assert all(seen[t] == cpus for t in seen if t not in confined), seen
    # Alone, a confined environment is freed at its next invocation.
    out, _ = invoke_json(client, "placed", {"op": "py", "code": AFFINITY_THEN_SLEEP, "seconds": 0},
                         TenantId=confined[0])
    assert out["result"] == cpus, out
