"""Network access per function: none by default, outbound on the `condo:network=outbound` tag.

"Outside" here is a real second host: a network namespace with a veth pair, made by this test,
running a TCP server that answers with the address it saw the connection come from. A function
with outbound access must reach it (through the host, so the peer sees the host's address); a
function without must have no route at all. Neither may reach the host's loopback services or
condo's own API, whatever address it tries.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import error_of, invoke_json, zip_files

PROBE = r'''
import errno, json, socket

def connect(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect((host, port))
        s.sendall(b"hello\n")
        return "ok:" + s.recv(200).decode().strip()
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()

def default_gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            g = int(f[2], 16)
            return ".".join(str((g >> s) & 255) for s in (0, 8, 16, 24))
    return None

def handler(event, context):
    gateway = default_gateway()
    out = {
        "interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]),
        "resolv": open("/etc/resolv.conf").read(),
        "gateway": gateway,
        "targets": {f"{h}:{p}": connect(h, p) for h, p in event["targets"]},
    }
    if gateway:
        out["targets"].update({f"gateway:{p}": connect(gateway, p) for p in event["gateway_ports"]})
    return out
'''

CODE = zip_files({"probe.py": PROBE})


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def peer():
    """A second host: its own network namespace behind a veth pair, with a TCP server that
    answers `peer <address the connection came from>`. Yields (address, port, host side)."""
    ns = f"condo-peer-{os.getpid()}"
    host_if, peer_if = f"cph{os.getpid() % 100000}", f"cpp{os.getpid() % 100000}"
    octet = 100 + os.getpid() % 100
    host_addr, peer_addr = f"10.213.{octet}.1", f"10.213.{octet}.2"
    run("ip", "netns", "add", ns)
    server = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        run("ip", "link", "set", peer_if, "netns", ns)
        run("ip", "addr", "add", f"{host_addr}/24", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", ns, "addr", "add", f"{peer_addr}/24", "dev", peer_if)
        run("ip", "-n", ns, "link", "set", peer_if, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        serve = (
            "import socket\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{peer_addr}', 7777)); s.listen(64); print('listening', flush=True)\n"
            "while True:\n"
            "    c, a = s.accept()\n"
            "    c.settimeout(2)\n"
            "    try:\n"
            "        c.recv(100); c.sendall(('peer ' + a[0] + '\\n').encode())\n"
            "    except OSError:\n"
            "        pass\n"
            "    c.close()\n"
        )
        server = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", serve],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        yield peer_addr, 7777, host_addr
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class LoopbackListener:
    """A service on the host's loopback that records every connection it receives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                return
            self.accepted.append(addr)
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def loopback_service():
    listener = LoopbackListener()
    yield listener
    listener.close()


def probe(client, name: str, tenant: str, targets, gateway_ports=()) -> dict:
    out, resp = invoke_json(client, name, {"targets": targets, "gateway_ports": list(gateway_ports)},
                            TenantId=tenant)
    assert "FunctionError" not in resp, out
    return out


def helpers_of(pid: int) -> list[int]:
    """Network helper processes (pasta, which Debian re-executes as passt.avx2) of condo `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm.startswith(("pasta", "passt")) and ppid == pid:
            found.append(int(entry))
    return found


def test_functions_reach_nothing_by_default(lambda_client, make_function, peer, loopback_service, condo):
    peer_addr, peer_port, _ = peer
    fn = make_function(CODE, tenancy=True, Timeout=30)
    api_port = int(condo.endpoint.rsplit(":", 1)[1])
    out = probe(lambda_client, fn["FunctionName"], "quiet",
                [(peer_addr, peer_port), ("127.0.0.1", loopback_service.port), ("127.0.0.1", api_port)])
    assert out["interfaces"] == ["lo"], out
    assert out["gateway"] is None and out["resolv"] == "", out
    assert out["targets"][f"{peer_addr}:{peer_port}"] == "ENETUNREACH", out
    # The environment's own loopback: nothing of the host's listens there.
    assert out["targets"][f"127.0.0.1:{loopback_service.port}"] == "ECONNREFUSED", out
    assert out["targets"][f"127.0.0.1:{api_port}"] == "ECONNREFUSED", out
    assert loopback_service.accepted == []
    assert lambda_client.get_function(FunctionName=fn["FunctionName"])["Tags"] == {}


def test_outbound_functions_reach_the_outside_but_never_the_host(
        lambda_client, make_function, peer, loopback_service, condo, aws):
    peer_addr, peer_port, host_addr = peer
    fn = make_function(CODE, tenancy=True, Timeout=30, Tags={"condo:network": "outbound", "team": "net"})
    name = fn["FunctionName"]
    api_port = int(condo.endpoint.rsplit(":", 1)[1])
    targets = [(peer_addr, peer_port), ("127.0.0.1", loopback_service.port), ("127.0.0.1", api_port),
               (host_addr, loopback_service.port)]
    for tenant in ("a", "b"):
        out = probe(lambda_client, name, tenant, targets,
                    gateway_ports=[loopback_service.port, api_port])
        # The peer saw the connection come from the host: the helper made it on our behalf.
        assert out["targets"][f"{peer_addr}:{peer_port}"] == f"ok:peer {host_addr}", out
        assert "lo" in out["interfaces"] and len(out["interfaces"]) == 2, out
        assert out["resolv"].startswith("nameserver "), out
        # Loopback is the environment's own; the host's loopback is not behind the gateway
        # address either, nor behind the host's own addresses.
        assert out["targets"][f"127.0.0.1:{loopback_service.port}"] == "ECONNREFUSED", out
        assert out["targets"][f"127.0.0.1:{api_port}"] == "ECONNREFUSED", out
        assert out["gateway"] is not None, out
        for port in (loopback_service.port, api_port):
            assert not out["targets"][f"gateway:{port}"].startswith("ok"), out
        assert not out["targets"][f"{host_addr}:{loopback_service.port}"].startswith("ok"), out
    assert loopback_service.accepted == [], "a function reached a service on the host's loopback"

    # The tag is an ordinary tag to the aws CLI.
    rc, stdout, stderr = aws("lambda", "list-tags", "--resource", fn["FunctionArn"])
    assert rc == 0, stderr
    assert json.loads(stdout)["Tags"] == {"condo:network": "outbound", "team": "net"}
    assert lambda_client.get_function(FunctionName=name)["Tags"]["team"] == "net"

    # One helper per live environment, and none once they are gone.
    assert len(helpers_of(condo.proc.pid)) == 2
    lambda_client.delete_function(FunctionName=name)
    deadline = time.time() + 10
    while helpers_of(condo.proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert helpers_of(condo.proc.pid) == []


def test_tagging_turns_network_on_and_off_and_versions_keep_theirs(
        lambda_client, make_function, peer, aws):
    peer_addr, peer_port, host_addr = peer
    fn = make_function(CODE, tenancy=True, Timeout=30)
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    target = [(peer_addr, peer_port)]
    key = f"{peer_addr}:{peer_port}"
    assert probe(lambda_client, name, "t", target)["targets"][key] == "ENETUNREACH"

    # Turning it on retires the warm environment: the next invoke has a route.
    rc, _, stderr = aws("lambda", "tag-resource", "--resource", arn, "--tags", "condo:network=outbound")
    assert rc == 0, stderr
    assert probe(lambda_client, name, "t", target)["targets"][key] == f"ok:peer {host_addr}"
    v1 = lambda_client.publish_version(FunctionName=name)["Version"]

    rc, _, stderr = aws("lambda", "untag-resource", "--resource", arn, "--tag-keys", "condo:network")
    assert rc == 0, stderr
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {}
    assert probe(lambda_client, name, "t", target)["targets"][key] == "ENETUNREACH"
    # A published version keeps the network it was published with, like every other setting.
    out, resp = invoke_json(lambda_client, name, {"targets": target, "gateway_ports": []},
                            TenantId="t", Qualifier=v1)
    assert out["targets"][key] == f"ok:peer {host_addr}", out


@pytest.mark.parametrize("tags,code,needle", [
    ({"condo:network": "everything"}, "InvalidParameterValueException", "must be none or outbound"),
    ({"aws:owner": "me"}, "InvalidParameterValueException", "reserved"),
    ({"k" * 129: "v"}, "ValidationException", "between 1 and 128"),
    ({"k": "v" * 257}, "ValidationException", "between 0 and 256"),
])
def test_bad_tags_are_refused_and_change_nothing(lambda_client, make_function, tags, code, needle):
    fn = make_function(CODE, tenancy=True, Timeout=30, Tags={"team": "a"})
    with pytest.raises(ClientError) as e:
        lambda_client.tag_resource(Resource=fn["FunctionArn"], Tags=tags)
    status, error, message = error_of(e)
    assert (status, error) == (400, code), message
    assert needle in message
    assert message.count("validation error detected") <= 1, message
    assert lambda_client.list_tags(Resource=fn["FunctionArn"])["Tags"] == {"team": "a"}
    with pytest.raises(ClientError) as e:
        make_function(CODE, tenancy=True, Timeout=30, Tags=tags)
    assert error_of(e)[:2] == (400, code)


def test_tags_of_a_missing_function_or_a_version_are_refused(lambda_client, make_function):
    arn = "arn:aws:lambda:us-east-1:000000000000:function:e2e-no-such-function"
    with pytest.raises(ClientError) as e:
        lambda_client.list_tags(Resource=arn)
    assert error_of(e)[:2] == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as e:
        lambda_client.tag_resource(Resource=arn, Tags={"a": "b"})
    assert error_of(e)[:2] == (404, "ResourceNotFoundException")
    fn = make_function(CODE, tenancy=True, Timeout=30)
    with pytest.raises(ClientError) as e:
        lambda_client.tag_resource(Resource=fn["FunctionArn"] + ":1", Tags={"a": "b"})
    assert error_of(e)[:2] == (400, "InvalidParameterValueException")
