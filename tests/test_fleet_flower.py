"""The fleet on real Flower: the ClientApp in process (Message API, DP clipping, error replies),
a simulation of 4 nodes x 2 rounds, and a deployment of a TLS SuperLink and SuperNodes as real
processes on 127.0.0.1, including a node with bad data. Every process is stopped by PID and
the tests check that none is left running.

Flower 1.42 needs Python 3.11; there the test extra installs it, so these tests run (an
ImportError here is a failure, not a skip).
"""
import datetime
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

if sys.version_info < (3, 11):
    pytest.skip("Flower 1.42 needs Python 3.11 or newer", allow_module_level=True)
# before Flower is imported: its telemetry and update check would reach the network
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from edgetune import models  # noqa: E402
from edgetune.fleet import processes  # noqa: E402
from edgetune.fleet.task import RunSettings, initial_tensors  # noqa: E402
from edgetune.runtime import load_model  # noqa: E402
from edgetune.runtime.evaluate import evaluate_onnx  # noqa: E402
from helpers import run_cli  # noqa: E402

CLI = [sys.executable, "-m", "edgetune.runtime.cli"]
TEST_MARK = "EDGETUNE_FLEET_TEST"


FLOWER_LIKE = ("flower-super", "flwr-", "ray::", "raylet", "gcs_server", "ray/dashboard", "ray/_private",
               "fleet supernode", "fleet simulate")


def flower_like_pids():
    """PIDs whose command line is a Flower, Ray or edgetune fleet process (whoever started it)."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except (OSError, IndexError, ValueError):
            continue
        if not zombie and any(k in cmd for k in FLOWER_LIKE):
            found.add(int(entry))
    return found


def other_runs_pids(token):
    """PIDs whose environment carries another test run's marker: a second suite on the same
    machine starts Flower and Ray processes of its own, which are not this test's leftovers."""
    mine, other = f"{TEST_MARK}={token}".encode(), f"{TEST_MARK}=".encode()
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(v.startswith(other) for v in env) and mine not in env:
            found.add(int(entry))
    return found


def assert_nothing_left(token, before):
    """Neither a process carrying the test's marker nor a new Flower/Ray process (other than
    another test run's) may still run."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = set(processes.marked_pids(token, TEST_MARK)) | (flower_like_pids() - before - other_runs_pids(token))
        if not left:
            return
        time.sleep(0.2)
    assert not left, f"processes of the fleet are still running: {sorted(left)}"


@pytest.fixture
def no_leftovers(monkeypatch):
    """Mark every process this test starts (the environment is inherited); after the test, none may live."""
    token = secrets.token_hex(6)
    before = flower_like_pids()
    monkeypatch.setenv(TEST_MARK, token)
    yield token
    assert_nothing_left(token, before)


# -- ClientApp in process ------------------------------------------------------------------------
@pytest.fixture
def client_call(monkeypatch):
    """Call edgetune's ClientApp the way a SuperNode does, without one."""
    from edgetune.fleet.client_app import app

    for attr, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)

    def call(settings, node_config, config, tensors, kind=MessageType.TRAIN):
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in tensors.items()}),
                              "config": ConfigRecord({"server-round": 1, **config})})
        ctx = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(),
                      run_config=settings.to_run_config())
        return app(Message(content, dst_node_id=7, message_type=kind), ctx)

    return call


def test_client_app_replies_with_the_trained_tensors_only(client_call):
    s = RunSettings(train_layers="last:1")
    sent = initial_tensors(s)
    rep = client_call(s, {"partition-id": 1, "num-partitions": 4}, {}, sent)
    assert not rep.has_error()
    got = {k: v.numpy() for k, v in rep.content["arrays"].items()}
    assert list(got) == ["fc.weight", "fc.bias"] and all(got[k].dtype == np.float32 for k in got)
    assert all(got[k].shape == sent[k].shape and not np.array_equal(got[k], sent[k]) for k in got)
    metrics = rep.content["metrics"]
    assert metrics["num-examples"] == 150 and metrics["tensor-bytes"] == (5120 + 10) * 4
    assert rep.content["node"]["name"] == "partition 1"
    ev = client_call(s, {"partition-id": 1, "num-partitions": 4}, {}, got, kind=MessageType.EVALUATE)
    assert ev.content["metrics"]["num-examples"] == 75 and 0 < ev.content["metrics"]["val-acc"] <= 1


def test_client_side_fixed_clipping_bounds_the_update(client_call):
    s = RunSettings(train_layers="last:1")
    sent = initial_tensors(s)
    free = client_call(s, {"partition-id": 0, "num-partitions": 4}, {}, sent)
    clipped = client_call(s, {"partition-id": 0, "num-partitions": 4}, {"clipping_norm": 0.05}, sent)

    def norm(rep):
        got = {k: v.numpy() for k, v in rep.content["arrays"].items()}
        return float(np.sqrt(sum(((got[k] - sent[k]).astype(np.float64) ** 2).sum() for k in sent)))

    assert norm(free) > 0.2
    assert norm(clipped) == pytest.approx(0.05, rel=1e-4)


def test_client_app_error_reply_names_the_node(client_call, tmp_path):
    from helpers import digits_like

    bad = digits_like(tmp_path / "bad.npz", y=np.full(64, 42))
    s = RunSettings(model="digits_mlp", train_layers="last:1")
    rep = client_call(s, {"data": str(bad), "name": "cam-7"}, {}, initial_tensors(s))
    assert rep.has_error()
    assert rep.error.reason.startswith("node cam-7: ") and "labels span 42..42" in rep.error.reason


class FakeGrid:
    """The part of Flower's Grid a strategy's configure_* uses."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def _reply(msg, values, n=10):
    from flwr.app import MetricRecord

    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.full((40, 100), values, np.float32))}),
                               "metrics": MetricRecord({"num-examples": n, "train-loss": 1.0, "train-acc": 0.5})}),
                   reply_to=msg)


@pytest.fixture
def strategy_of(monkeypatch):
    for attr, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)
    from edgetune.fleet.strategy import build_strategy

    def make(**kw):
        reported = []
        return build_strategy(RunSettings(node_wait_timeout=1.0, **kw), reported.append), reported
    return make


GLOBAL = ArrayRecord({"w": Array(np.zeros((40, 100), np.float32))})


def test_strategy_records_bytes_failures_and_missing_replies(strategy_of):
    from flwr.app import Error

    st, _ = strategy_of(min_nodes=3)
    msgs = list(st.configure_train(1, GLOBAL, ConfigRecord({}), FakeGrid([11, 22, 33])))
    assert len(msgs) == 3 and st.rounds[1]["bytes_down"] == 3 * 16000
    replies = [_reply(msgs[0], 1.0), Message(Error(code=2, reason="node cam-9: broken"), reply_to=msgs[1])]
    arrays, _ = st.aggregate_train(1, replies)               # msgs[2] never answered
    rec = st.rounds[1]
    assert rec["bytes_up"] == 16000 and rec["aggregated"] and len(rec["clients"]) == 1
    assert arrays["w"].numpy().dtype == np.float32 and np.all(arrays["w"].numpy() == 1.0)
    reasons = {f["node_id"]: f["reason"] for f in rec["failures"]}
    assert reasons == {msgs[1].metadata.dst_node_id: "node cam-9: broken",
                       msgs[2].metadata.dst_node_id: "no reply within 600 s"}


def test_a_round_in_which_no_node_succeeded_is_an_error(strategy_of):
    from flwr.app import Error

    from edgetune.fleet import FleetError

    st, _ = strategy_of(min_nodes=2)
    msgs = list(st.configure_train(1, GLOBAL, ConfigRecord({}), FakeGrid([1, 2])))
    with pytest.raises(FleetError, match="round 1: no node finished training; node a: x; node b: y"):
        st.aggregate_train(1, [Message(Error(code=2, reason=f"node {n}: {r}"), reply_to=m)
                               for m, n, r in zip(msgs, "ab", "xy")])


def test_too_few_nodes_is_an_error_not_a_wait_forever(strategy_of):
    from edgetune.fleet import FleetError

    st, _ = strategy_of(min_nodes=3)
    with pytest.raises(FleetError, match="only 2 of 3 nodes connected within 1 s"):
        st.configure_train(1, GLOBAL, ConfigRecord({}), FakeGrid([1, 2]))


def test_dp_sends_the_clipping_norm_and_adds_noise_of_z_c_over_n(strategy_of):
    st, _ = strategy_of(min_nodes=4, dp_clipping_norm=2.0, dp_noise_multiplier=0.8)
    msgs = list(st.configure_train(1, GLOBAL, ConfigRecord({}), FakeGrid([1, 2, 3, 4])))
    assert all(m.content["config"]["clipping_norm"] == 2.0 for m in msgs)
    arrays, _ = st.aggregate_train(1, [_reply(m, 0.5) for m in msgs])
    w = arrays["w"].numpy()
    assert w.dtype == np.float32
    assert abs(w.mean() - 0.5) < 0.03 and w.std() == pytest.approx(0.8 * 2.0 / 4, rel=0.06)


def test_app_config_is_a_valid_flower_app(tmp_path):
    from flwr.cli.config_utils import load_and_validate

    assert run_cli("fleet", "init", tmp_path / "app").exit_code == 0
    config, _warnings = load_and_validate(tmp_path / "app" / "pyproject.toml", check_module=True)
    assert config["tool"]["flwr"]["app"]["publisher"] == "edgetune"


# -- simulation ---------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_simulation_of_4_nodes_2_rounds_last_layer(tmp_path, no_leftovers):
    out, rep = tmp_path / "fleet.onnx", tmp_path / "report.json"
    run = subprocess.run(CLI + ["fleet", "simulate", "digits_cnn", "--clients", "4", "--rounds", "2",
                                "--train-layers", "last:1", "--out", str(out), "--report", str(rep)],
                         capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(rep.read_text())
    model = load_model("digits_cnn")
    names = model.trainable_names("last:1")
    trained = sum(model.params[n].nbytes for n in names)
    assert doc["trained_tensors"] == names and doc["tensor_bytes"] == trained
    assert [r["round"] for r in doc["rounds"]] == [1, 2] and doc["failures"] == []
    n_train = len(models.load_dataset("digits_shifted")["y"])
    for r in doc["rounds"]:
        assert r["sampled"] == 4 and len(r["clients"]) == 4 and len(r["evaluation"]) == 4
        # only the trained tensors travel: to each node and back, exactly their bytes
        assert r["bytes_down"] == r["bytes_up"] == 4 * trained
        assert all(c["tensor-bytes"] == trained for c in r["clients"])
        # Flower's own count adds a serialisation header and the name of each tensor
        assert 0 < r["record_bytes_up"] - r["bytes_up"] <= 4 * sum(128 + len(n) for n in names)
        assert sorted(c["name"] for c in r["clients"]) == [f"partition {i}" for i in range(4)]
        assert sum(c["num-examples"] for c in r["clients"]) == n_train
    assert doc["after"]["val_acc"] > doc["before"]["val_acc"] + 0.05
    ort = evaluate_onnx(str(out), "digits_shifted")
    assert doc["export"]["ort_val_acc"] == ort["accuracy"]
    assert abs(ort["accuracy"] - doc["after"]["val_acc"]) <= 1 / ort["n"] + 1e-12
    for line in ("round 0/2", "round 1/2", "round 2/2", f"{4 * trained:,} B up"):
        assert line in run.stdout, run.stdout


@pytest.mark.timeout(120)
def test_simulate_stopped_by_sigterm_leaves_no_process(tmp_path, no_leftovers):
    """SIGTERM while Ray starts: the command ends like Ctrl-C, and stops every process of its fleet."""
    proc = subprocess.Popen(CLI + ["fleet", "simulate", "digits_mlp", "--clients", "2", "--rounds", "50",
                                   "--out", str(tmp_path / "f.onnx")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert "SuperLink on 127.0.0.1:" in first, first
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 130, first + rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not (tmp_path / "f.onnx").exists()


@pytest.mark.timeout(120)
def test_superlink_takes_another_port_when_its_port_was_taken(tmp_path, monkeypatch, no_leftovers):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken, real, calls = busy.getsockname()[1], processes.free_port, []

    def first_taken(host="127.0.0.1"):
        calls.append(host)
        return taken if len(calls) == 1 else real(host)

    monkeypatch.setattr(processes, "free_port", first_taken)
    try:
        with processes.Fleet(str(tmp_path / "home")) as fleet:
            link = fleet.superlink()
            assert link.port != taken and len(calls) == 2 and link.alive()
    finally:
        busy.close()


# -- deployment ---------------------------------------------------------------------------------------
def _certificates(folder):
    """A CA and a server certificate for 127.0.0.1, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, sign_key, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                             x509.DNSName("localhost")]), critical=False)
        return b.sign(sign_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgetune test CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    server = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key, ca_key, False)
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.crt", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


class Deployment:
    """A TLS SuperLink (Fleet helper) and `edgetune fleet supernode` processes, stopped by PID."""

    def __init__(self, root):
        self.root = root
        self.certs = _certificates(root)
        self.fleet = processes.Fleet(str(root / "server-home"))
        self.port = self.fleet.superlink(certs=self.certs).port
        self.fleet.connection("fleet", f"127.0.0.1:{self.port}", ca=self.certs["ca"])
        self.nodes = {}

    def node(self, name, data):
        log = open(self.root / f"{name}.log", "wb")
        self.nodes[name] = subprocess.Popen(
            CLI + ["fleet", "supernode", "--superlink", f"127.0.0.1:{self.port}", "--data", str(data), "--name", name,
                   "--root-certificates", self.certs["ca"], "--threads", "1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def stop_node(self, name):
        proc = self.nodes.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def close(self):
        try:
            for name in list(self.nodes):
                self.stop_node(name)
        finally:
            self.fleet.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    token = secrets.token_hex(6)
    before = flower_like_pids()
    old = os.environ.get(TEST_MARK)
    os.environ[TEST_MARK] = token
    root = tmp_path_factory.mktemp("deploy")
    d = Deployment(root)
    try:
        data = models.load_dataset("digits_shifted")
        half = len(data["y"]) // 2
        for i, part in enumerate((slice(0, half), slice(half, None)), start=1):
            np.savez(root / f"cam-0{i}.npz", x=data["x"][part], y=data["y"][part])
            d.node(f"cam-0{i}", root / f"cam-0{i}.npz")
        assert run_cli("fleet", "init", root / "app", "--rounds", "1", "--train-layers", "last:1", "--min-nodes", "2",
                       "--out", root / "out.onnx", "--report", root / "report.json").exit_code == 0
        yield d
    finally:
        d.close()
        if old is None:
            os.environ.pop(TEST_MARK, None)
        else:
            os.environ[TEST_MARK] = old
        assert_nothing_left(token, before)


@pytest.mark.timeout(300)
def test_deployment_superlink_and_two_supernodes_over_tls(deployment):
    root = deployment.root
    run_id = deployment.fleet.start_run(str(root / "app"), "fleet", {"node-wait-timeout": 90.0})
    row = deployment.fleet.wait_run(run_id, timeout=240)
    assert row["status"] == "finished:completed", row
    doc = json.loads((root / "report.json").read_text())
    (r,) = doc["rounds"]
    assert sorted(c["name"] for c in r["clients"]) == ["cam-01", "cam-02"] and doc["failures"] == []
    assert r["bytes_up"] == 2 * doc["tensor_bytes"] == 2 * (5120 + 10) * 4
    assert doc["after"]["val_acc"] > doc["before"]["val_acc"]
    assert evaluate_onnx(str(root / "out.onnx"), "digits_shifted")["accuracy"] == doc["export"]["ort_val_acc"]


@pytest.mark.timeout(300)
def test_a_node_with_bad_data_fails_the_run_and_is_named(deployment):
    root = deployment.root
    data = models.load_dataset("digits_shifted")
    np.savez(root / "bad.npz", x=data["x"][:100], y=np.full(100, 42))
    deployment.node("cam-bad", root / "bad.npz")
    try:
        run_id = deployment.fleet.start_run(str(root / "app"), "fleet", {
            "min-nodes": 3, "node-wait-timeout": 90.0, "fraction-evaluate": 0.0, "report": str(root / "failed.json"),
            "out": str(root / "failed.onnx")})
        row = deployment.fleet.wait_run(run_id, timeout=240)
    finally:
        deployment.stop_node("cam-bad")
    assert row["status"] == "finished:failed", row
    assert "node cam-bad: " in row["status-details"] and "labels span 42..42" in row["status-details"]
    doc = json.loads((root / "failed.json").read_text())
    assert doc["status"] == "completed_with_failures"
    assert [f["phase"] for f in doc["failures"]] == ["train"]
    assert all(f["reason"].startswith("node cam-bad: ") for f in doc["failures"])
    assert sorted(c["name"] for c in doc["rounds"][0]["clients"]) == ["cam-01", "cam-02"]
