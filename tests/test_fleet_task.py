"""edgetune.fleet without Flower: partitioners, tensor packing, FedProx's proximal term against a
hand-computed step, one node's round (train_round) and the run settings."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import digits_like, tiny_mlp
from edgetune.runtime import compute_gradients, load_model
from edgetune.runtime.engines import make_engine
from edgetune.runtime.errors import DataError, UsageError
from edgetune.runtime.optim import OptimizerConfig
from edgetune.fleet import packing
from edgetune.fleet.partition import parse_partition, partition_indices, shard
from edgetune.fleet.task import ProximalTerm, RunSettings, train_round

GEN = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
labels_st = st.lists(st.integers(0, 9), min_size=8, max_size=400).map(np.array)


# -- partitioners -----------------------------------------------------------------------------
@GEN
@given(labels=labels_st, parts=st.integers(1, 8), seed=st.integers(0, 2 ** 16),
       spec=st.sampled_from(["iid", "dirichlet:0.1", "dirichlet:1", "dirichlet:100"]))
def test_partitions_are_disjoint_and_cover_every_sample(labels, parts, seed, spec):
    if len(labels) < parts:
        with pytest.raises(DataError):
            partition_indices(labels, parts, spec, seed)
        return
    try:
        got = partition_indices(labels, parts, spec, seed)
    except DataError:
        assert spec.startswith("dirichlet")   # only a skewed draw may fail to feed every node
        return
    assert len(got) == parts
    joined = np.concatenate(got)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert all(len(p) >= 1 and np.all(np.diff(p) > 0) for p in got)
    if spec == "iid":
        sizes = [len(p) for p in got]
        assert max(sizes) - min(sizes) <= 1
    again = partition_indices(labels, parts, spec, seed)
    assert all(np.array_equal(a, b) for a, b in zip(got, again))


def test_small_dirichlet_alpha_skews_labels_and_large_alpha_does_not():
    labels = np.repeat(np.arange(10), 60)

    def classes_per_node(spec):
        return np.mean([len(np.unique(labels[p])) for p in partition_indices(labels, 6, spec, seed=3)])

    assert classes_per_node("dirichlet:0.05") < 5 < classes_per_node("dirichlet:1000") == 10
    assert classes_per_node("iid") == 10


def test_dirichlet_validation_shard_follows_the_training_label_mix():
    rng = np.random.default_rng(0)
    y, y_val = rng.permutation(np.repeat(np.arange(10), 80)), rng.permutation(np.repeat(np.arange(10), 40))
    for node in range(5):
        tr, va = shard(y, y_val, node, 5, "dirichlet:0.2", seed=1)
        h_tr, h_va = np.bincount(y[tr], minlength=10), np.bincount(y_val[va], minlength=10)
        assert np.corrcoef(h_tr, h_va)[0, 1] > 0.95, (h_tr, h_va)


@pytest.mark.parametrize("spec", ["", "random", "dirichlet", "dirichlet:", "dirichlet:x", "dirichlet:0",
                                  "dirichlet:-1", "dirichlet:nan"])
def test_bad_partition_spec_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="partition"):
        parse_partition(spec)


def test_partition_id_outside_the_fleet_is_an_error():
    with pytest.raises(UsageError, match="outside 0..3"):
        shard(np.zeros(10, int), np.zeros(4, int), 4, 4, "iid")


# -- tensor packing ---------------------------------------------------------------------------
shapes_st = st.dictionaries(st.text("abcdefgh._", min_size=1, max_size=12),
                            st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple), min_size=1, max_size=6)


@GEN
@given(shapes=shapes_st, seed=st.integers(0, 1000), dtype=st.sampled_from([np.float32, np.float64, np.float16]))
def test_pack_unpack_round_trip_keeps_names_order_and_values(shapes, seed, dtype):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    names = list(reversed(list(shapes)))
    packed = packing.pack(params, names)
    assert list(packed) == names
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in packed.values())
    assert packing.tensor_bytes(packed) == 4 * sum(int(np.prod(s)) for s in shapes.values())
    back = packing.unpack(packed, packing.shapes(params, names))
    for k in names:
        assert np.array_equal(back[k], params[k].astype(np.float32))
        assert back[k] is not packed[k]


def test_unpack_names_what_does_not_fit():
    expected = {"w": (2, 3), "b": (2,)}
    good = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
    with pytest.raises(packing.TensorMismatch, match="missing b"):
        packing.unpack({"w": good["w"]}, expected)
    with pytest.raises(packing.TensorMismatch, match="unexpected x"):
        packing.unpack({**good, "x": good["b"]}, expected)
    with pytest.raises(packing.TensorMismatch, match=r"'w' arrived with shape \(3, 2\)"):
        packing.unpack({**good, "w": np.zeros((3, 2), np.float32)}, expected)
    with pytest.raises(packing.TensorMismatch, match="int32"):
        packing.unpack({**good, "b": np.zeros(2, np.int32)}, expected)
    with pytest.raises(packing.TensorMismatch, match="NaN or Inf"):
        packing.unpack({**good, "b": np.array([0, np.nan], np.float32)}, expected)


def test_only_the_trained_tensors_of_last_k_travel():
    model = load_model("digits_cnn")
    names = model.trainable_names("last:1")
    packed = packing.pack(model.params, names)
    assert names == ["fc.weight", "fc.bias"]
    assert packing.tensor_bytes(packed) == (10 * 512 + 10) * 4


# -- FedProx --------------------------------------------------------------------------------------
@pytest.fixture
def mlp_path(tmp_path):
    return tiny_mlp(tmp_path / "mlp.onnx", hidden=12, seed=5)


@pytest.mark.parametrize("engine", ["dense", "native"])
def test_proximal_term_matches_a_hand_computed_sgd_step(mlp_path, engine):
    """w1 = w0 - lr * (g(w0) + mu * (w0 - w_global)), with g from compute_gradients."""
    model = load_model(str(mlp_path))
    rng = np.random.default_rng(2)
    x, y = rng.random((16, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 16)
    anchor = {k: v.copy() for k, v in model.params.items()}
    w0 = {k: v + np.float32(0.05) * rng.standard_normal(v.shape).astype(np.float32) for k, v in anchor.items()}
    lr, mu = 0.1, 0.7
    eng = make_engine(engine)
    eng.load(model, None, OptimizerConfig(name="sgd", lr=lr, momentum=0.0))
    eng.set_params(w0)
    eng.set_grad_hook(ProximalTerm(mu, anchor))
    eng.train_step(x, y)
    got = eng.get_params()

    model.params.update(w0)
    _, g = compute_gradients(model, x, y, engine="dense")
    for k in anchor:
        want = w0[k].astype(np.float64) - lr * (g[k] + mu * (w0[k].astype(np.float64) - anchor[k]))
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-6, err_msg=k)
        assert not np.allclose(want, w0[k] - lr * g[k], atol=1e-4), "the proximal term must matter here"


def test_without_a_hook_loss_and_grads_and_the_step_are_unchanged(mlp_path):
    model = load_model(str(mlp_path))
    x, y = np.ones((4, 1, 8, 8), np.float32), np.arange(4)
    a, b = make_engine("dense"), make_engine("dense")
    a.load(model, None, OptimizerConfig(lr=0.1))
    b.load(model, None, OptimizerConfig(lr=0.1))
    b.set_grad_hook(ProximalTerm(0.5, model.params))
    b.set_grad_hook(None)
    a.train_step(x, y)
    b.train_step(x, y)
    assert all(np.array_equal(a.get_params()[k], b.get_params()[k]) for k in model.params)


def test_device_engine_refuses_fedprox_with_a_clear_error(mlp_path):
    dev = make_engine("device", device="emulator")
    try:
        dev.load(load_model(str(mlp_path)))
        with pytest.raises(UsageError, match="device engine.*FedProx"):
            dev.set_grad_hook(ProximalTerm(0.1, {}))
        dev.set_grad_hook(None)
    finally:
        dev.close()


def test_train_round_runs_local_fit_with_fedprox_as_computed_by_hand(mlp_path, tmp_path):
    """Two full-batch epochs of SGD with momentum 0.9 and the proximal term, against the formula."""
    data = digits_like(tmp_path / "node.npz", n=24, seed=4)
    model = load_model(str(mlp_path))
    names = model.trainable_names("last:1")
    w0 = packing.pack(model.params, names)
    s = RunSettings(model=str(mlp_path), data=str(data), lr=0.05, batch_size=64, local_epochs=2,
                    train_layers="last:1", strategy="fedprox", proximal_mu=0.3)
    out, metrics = train_round(s, {"data": str(data), "engine": "dense", "name": "n1"}, w0, server_round=1,
                               proximal_mu=0.3)
    assert list(out) == names and metrics["num-examples"] == 24 and metrics["tensor-bytes"] == 4 * 12 * 10 + 40

    d = np.load(data)
    x, y = d["x"].astype(np.float32), d["y"]

    def grad(w):
        model.params.update(w)
        return compute_gradients(model, x, y, engine="dense")[1]

    lr, mu, m = 0.05, 0.3, 0.9
    g1 = grad(w0)
    w1 = {k: w0[k] - lr * g1[k] for k in names}                      # w1 == w0: no proximal pull yet
    g2 = grad({**w0, **w1})
    d2 = {k: g2[k] + mu * (w1[k] - w0[k]) for k in names}
    w2 = {k: w1[k] - lr * (m * g1[k] + d2[k]) for k in names}
    fedavg = {k: w1[k] - lr * (m * g1[k] + g2[k]) for k in names}
    for k in names:
        np.testing.assert_allclose(out[k], w2[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert max(np.abs(out[k] - fedavg[k]).max() for k in names) > 1e-5, "the proximal term must matter here"


@pytest.mark.timeout(120)
def test_a_gateway_node_trains_on_the_accelerator_emulator_like_on_the_host(mlp_path, tmp_path):
    """engine=device (the emulator behind a pseudo-terminal) gives the native engine's tensors."""
    data = digits_like(tmp_path / "node.npz", n=48, seed=6)
    model = load_model(str(mlp_path))
    w0 = packing.pack(model.params, model.trainable_names())
    s = RunSettings(model=str(mlp_path), data=str(data), lr=0.05, batch_size=16, local_epochs=2)
    host, _ = train_round(s, {"data": str(data), "engine": "native"}, w0, server_round=3)
    dev, metrics = train_round(s, {"data": str(data), "engine": "device", "device": "emulator"}, w0, server_round=3)
    assert metrics["num-examples"] == 48 and list(dev) == list(host)
    for k in host:
        np.testing.assert_allclose(dev[k], host[k], rtol=1e-5, atol=1e-6, err_msg=k)
        assert not np.array_equal(dev[k], w0[k])


def test_a_node_without_data_or_with_bad_labels_fails_clearly(mlp_path, tmp_path):
    model = load_model(str(mlp_path))
    w0 = packing.pack(model.params, model.trainable_names())
    s = RunSettings(model=str(mlp_path), data="unused")
    with pytest.raises(DataError, match="fleet supernode --data"):
        train_round(s, {}, w0, 1)
    bad = digits_like(tmp_path / "bad.npz", y=np.full(64, 42))
    with pytest.raises(DataError, match="labels span 42..42"):
        train_round(s, {"data": str(bad), "engine": "dense"}, w0, 1)
    with pytest.raises(packing.TensorMismatch, match="same model"):
        train_round(s, {"data": str(bad), "engine": "dense"}, {"other": np.zeros(3, np.float32)}, 1)


# -- run settings ----------------------------------------------------------------------------------
def test_run_settings_round_trip_through_the_run_config():
    s = RunSettings(rounds=5, partition="dirichlet:0.3", strategy="fedprox", proximal_mu=0.01, lr=0.1,
                    allow_client_failures=True)
    assert RunSettings.from_run_config(s.to_run_config()) == s
    assert RunSettings.from_run_config({"rounds": 2, "lr": 1, "unknown-key": "x"}).lr == 1.0


@pytest.mark.parametrize("change, message", [
    (dict(strategy="fedprox"), "needs --mu"),
    (dict(proximal_mu=0.1), "fedprox only"),
    (dict(strategy="fedprox", proximal_mu=0.1, engine="device"), "device engine"),
    (dict(partition="shards"), "partition"),
    (dict(rounds=0), "--rounds"),
    (dict(lr=float("nan")), "--lr"),
    (dict(train_layers="first:2"), "train-layers"),
    (dict(dp_noise_multiplier=1.0), "--dp-clip"),
    (dict(strategy="scaffold"), "--strategy"),
])
def test_bad_run_settings_are_usage_errors(change, message):
    with pytest.raises(UsageError, match=message):
        RunSettings(**change).checked()


def test_run_config_with_a_wrong_type_is_a_usage_error():
    with pytest.raises(UsageError, match="rounds must be a int"):
        RunSettings.from_run_config({"rounds": "many"})
    with pytest.raises(UsageError, match="true or false"):
        RunSettings.from_run_config({"allow-client-failures": "yes"})
