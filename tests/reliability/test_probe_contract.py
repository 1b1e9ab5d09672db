"""The probe in hostile training loops: a correct number or a named error, never a silent one.

docs/theory.md §11 ("Training"). Each case is a user's training loop or model the probe must read
correctly (parameter groups, schedulers, tied weights, a scalar parameter, frozen parameters,
layer selection) or refuse by name (momentum, adaptive optimizers, BatchNorm or dropout in
training mode, an lr changed inside the window, mixed dtypes or devices). "Correct" is checked
against an independent computation: the dense autograd Hessian of a hand-written loss with the
per-group weight decay, the subspace theory recomputed with the group's η, the settings the
optimizer holds. The state-untouched test checks that ``observe()`` and ``analyze()`` leave the
model's ``state_dict()``, buffers, gradients, modes and every RNG state bitwise unchanged.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _torch_reference import dense_hessian  # noqa: E402 (after the torch skip)

nn = torch.nn

from sgdfluct.errors import ConfigError, MeasurementError, exit_code  # noqa: E402
from sgdfluct.probe import FluctuationProbe  # noqa: E402
from sgdfluct.theory.lyapunov import discrete_additive_covariance  # noqa: E402

#: float64 round-off of an HVP against autograd's dense Hessian on O(1) entries (a few dozen
#: operations of 1e-16 each, with a 1000x margin)
HVP_RTOL = 1e-12
#: plateau blocks of 40 steps (20 records of every = 2, the probe's minimum) and a window of 200
#: steps: a tiny model plateaus within ~300 steps and analyses in well under a second
FAST = {"window": 200, "every": 2, "plateau_block": 40, "top_k": 3, "bootstrap": 20}


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _data(n: int = 40, n_in: int = 4, n_out: int = 2, seed: int = 0) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=gen, dtype=torch.float64)
    y = torch.randn(n, n_out, generator=gen, dtype=torch.float64)
    return x, y


class MLP(nn.Module):
    def __init__(self, n_in: int = 4, hidden: int = 3, n_out: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP().to(torch.float64)


def _train(
    probe: FluctuationProbe,
    model: nn.Module,
    opt: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 6000,
    attached: bool = False,
    each_step: Callable[[int], None] | None = None,
    seed: int = 1,
) -> None:
    """A user's loop: loss.backward(), optimizer.step(), then observe() unless attached."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        idx = torch.randint(x.shape[0], (5,), generator=gen)
        opt.zero_grad()
        _half_mse(model(x[idx]), y[idx]).backward()
        opt.step()
        if not attached:
            probe.observe()
        if each_step is not None:
            each_step(t)
        if probe.done:
            return
    raise AssertionError("the probe never completed its window")


def _probe(model: nn.Module, x: Any, y: Any, **kw: Any) -> FluctuationProbe:
    args = {**FAST, "batch_size": 5, **kw}
    return FluctuationProbe(model, _half_mse, (x, y), **args)


def _block(dense: np.ndarray, names: list[str], sizes: list[int], want: tuple[str, ...]) -> Any:
    offs = np.concatenate([[0], np.cumsum(sizes)])
    idx = np.concatenate([np.arange(offs[names.index(n)], offs[names.index(n) + 1]) for n in want])
    return dense[np.ix_(idx, idx)]


def _check_curvature(probe: FluctuationProbe, model: nn.Module, x: Any, y: Any, decay: Any) -> None:
    dense = dense_hessian(model, _half_mse, x, y, decay)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    rng = np.random.default_rng(3)
    for lay in probe.layers:
        k = min(3, lay.dim)
        p = np.linalg.qr(rng.standard_normal((lay.dim, k)))[0].T
        got = probe.projected_hessian(lay.index, p)
        want = p @ _block(dense, names, sizes, lay.param_names) @ p.T
        np.testing.assert_allclose(got, want, rtol=HVP_RTOL, atol=HVP_RTOL * np.abs(want).max())


# ------------------------------------------------------------------------------------------------
# optimizers the theory does not cover: refused by name, at construction
# ------------------------------------------------------------------------------------------------

OPTIMIZER_REFUSALS = [
    (
        "momentum",
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        r"\[0\]\['momentum'\] = 0.9",
    ),
    (
        "nesterov",
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5, nesterov=True),
        r"momentum'\] = 0.5 \(nesterov = True\)",
    ),
    ("maximize", lambda ps: torch.optim.SGD(ps, lr=0.05, maximize=True), r"'maximize'\] = True"),
    ("adam", lambda ps: torch.optim.Adam(ps, lr=0.01), r"torch\.optim\.adam\.Adam"),
    ("adamw", lambda ps: torch.optim.AdamW(ps, lr=0.01), r"AdamW: expected torch\.optim\.SGD"),
    ("rmsprop", lambda ps: torch.optim.RMSprop(ps, lr=0.01), r"RMSprop: expected"),
    ("adagrad", lambda ps: torch.optim.Adagrad(ps, lr=0.01), r"Adagrad: expected"),
    ("lr_zero", lambda ps: torch.optim.SGD(ps, lr=0.0), r"\['lr'\] = 0.0 is out of range"),
]


@pytest.mark.parametrize(("case", "make", "match"), OPTIMIZER_REFUSALS, ids=lambda v: v)
def test_optimizer_refused_by_name(case: str, make: Any, match: str, record: dict) -> None:
    model = _mlp()
    x, y = _data()
    with pytest.raises(ConfigError, match=match) as err:
        _probe(model, x, y, optimizer=make(model.parameters()))
    record.update(outcome="named error", exit=exit_code(err.value))
    assert exit_code(err.value) == 2


def test_momentum_in_second_group_refused_naming_the_group(record: dict) -> None:
    """Momentum in group 1 only (the group-0-only reader accepted it: theory errors 0.7-0.9)."""
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(
        [{"params": model.fc1.parameters()}, {"params": model.fc2.parameters(), "momentum": 0.9}],
        lr=0.05,
    )
    with pytest.raises(ConfigError, match=r"param_groups\[1\]\['momentum'\] = 0.9"):
        _probe(model, x, y, optimizer=opt)
    record.update(outcome="named error", exit=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of learning_rate and optimizer"),
        ({"learning_rate": 0.1, "optimizer": "opt"}, "exactly one of learning_rate and optimizer"),
        ({"optimizer": "opt", "weight_decay": 0.1}, "weight_decay = 0.1 given with optimizer"),
        ({"learning_rate": 0.0}, r"learning_rate = 0.0 is out of range"),
        ({"learning_rate": -0.1}, r"learning_rate = -0.1 is out of range"),
        ({"learning_rate": math.nan}, r"learning_rate = nan is out of range"),
        ({"learning_rate": math.inf}, r"learning_rate = inf is out of range"),
        ({"learning_rate": 0.1, "weight_decay": -1.0}, r"weight_decay = -1.0 is out of range"),
        ({"learning_rate": 0.1, "loss_samples": 0}, r"loss_samples = 0 is out of range"),
        ({"learning_rate": 0.1, "loss_samples": 41}, r"loss_samples = 41 is out of range"),
        ({"learning_rate": 0.1, "loss_samples": True}, r"loss_samples = True"),
    ],
    ids=lambda v: str(v),
)
def test_constructor_values_refused_by_name(kwargs: dict, match: str, record: dict) -> None:
    model = _mlp()
    x, y = _data()
    kw = dict(kwargs)
    if kw.get("optimizer") == "opt":
        kw["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=match):
        _probe(model, x, y, **kw)
    record.update(outcome="named error", exit=2)


def test_optimizer_of_another_model_refused(record: dict) -> None:
    model, other = _mlp(), _mlp(1)
    x, y = _data()
    opt = torch.optim.SGD([*model.parameters(), other.fc1.weight], lr=0.05)
    with pytest.raises(ConfigError, match=r"param_groups\[0\]\['params'\]\[4\].*not a parameter"):
        _probe(model, x, y, optimizer=opt)
    record.update(outcome="named error", exit=2)


def test_tensor_learning_rate_is_read(record: dict) -> None:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.04))
    probe = _probe(model, x, y, optimizer=opt)
    assert probe.learning_rate == pytest.approx(0.04, rel=1e-7)
    record.update(outcome="correct number")


# ------------------------------------------------------------------------------------------------
# parameter groups: every group's lr and weight decay, in H, in temperatures and in the theory
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("wd_weight", "wd_bias"), [(0.1, 0.0), (0.0, 0.2), (0.05, 0.3)])
def test_per_group_weight_decay_enters_the_hessian(
    wd_weight: float, wd_bias: float, record: dict
) -> None:
    """'No weight decay on biases': H has λ_g on each group's parameters (dense Hessian check)."""
    model = _mlp()
    x, y = _data()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD(
        [
            {"params": weights, "weight_decay": wd_weight},
            {"params": biases, "weight_decay": wd_bias},
        ],
        lr=0.05,
    )
    probe = _probe(model, x, y, optimizer=opt)
    decay = {
        n: (wd_weight if n.endswith("weight") else wd_bias) for n, _ in model.named_parameters()
    }
    _check_curvature(probe, model, x, y, decay)
    with torch.no_grad():
        want_loss = float(_half_mse(model(x), y))
    want_loss += sum(0.5 * decay[n] * float((p**2).sum()) for n, p in model.named_parameters())
    assert probe.train_loss() == pytest.approx(want_loss, rel=1e-14)
    record.update(outcome="correct number")


def _two_group_run(lr1: float, lr2: float, attached: bool) -> tuple[Any, FluctuationProbe]:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(
        [{"params": model.fc1.parameters(), "lr": lr1}, {"params": model.fc2.parameters()}],
        lr=lr2,
    )
    probe = _probe(model, x, y, optimizer=opt)
    if attached:
        probe.attach(opt)
    _train(probe, model, opt, x, y, attached=attached)
    return probe.analyze(), probe


@pytest.mark.parametrize("attached", [False, True], ids=["observe", "attach"])
def test_per_group_learning_rate_in_temperatures_and_theory(attached: bool, record: dict) -> None:
    """Layer 1 at η = 0.03, layer 2 at η = 0.08: each layer's T_i and subspace theory use its η."""
    run, _ = _two_group_run(0.03, 0.08, attached)
    assert [lr.learning_rate for lr in run.layers] == [0.03, 0.08]
    assert run.learning_rate == 0.08  # the largest (stability bounds)
    assert [g["lr"] for g in run.param_groups] == [0.03, 0.08]
    for lr in run.layers:
        eta = lr.learning_rate
        curv, c = np.diag(lr.hessian_proj), np.diag(lr.noise_proj)
        ok = curv > 0
        np.testing.assert_allclose(
            lr.temperature[ok], run.batch_factor * eta * c[ok] / (2 * curv[ok]), rtol=1e-15
        )
        want = discrete_additive_covariance(
            lr.hessian_proj, lr.noise_proj, learning_rate=eta, batch_factor=run.batch_factor
        )
        np.testing.assert_allclose(lr.weight_cov_theory, want, rtol=1e-15)
    record.update(outcome="correct number")


def test_attach_equals_manual_observe_bitwise(record: dict) -> None:
    """The step hook sees the same steps as manual observe() calls: identical results."""
    a, pa = _two_group_run(0.03, 0.08, attached=False)
    b, pb = _two_group_run(0.03, 0.08, attached=True)
    assert pa.step == pb.step and pb._hook is None  # the hook removed itself when done
    for la, lb in zip(a.layers, b.layers, strict=True):
        np.testing.assert_array_equal(la.variances, lb.variances)
        np.testing.assert_array_equal(la.curvature, lb.curvature)
    record.update(outcome="correct number")


def test_mixed_learning_rates_within_a_layer_are_named(record: dict) -> None:
    """Weight and bias of one module at different η: T_i and theory NaN with a note naming it."""
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(
        [
            {"params": [model.fc1.weight, model.fc2.weight, model.fc2.bias]},
            {"params": [model.fc1.bias], "lr": 0.01},
        ],
        lr=0.05,
    )
    probe = _probe(model, x, y, optimizer=opt)
    _train(probe, model, opt, x, y)
    run = probe.analyze()
    l1, l2 = run.layers
    assert math.isnan(l1.learning_rate) and np.all(np.isnan(l1.temperature))
    assert np.all(np.isnan(l1.weight_cov_theory))
    assert any("different learning rates" in n and "fc1.bias" in n for n in l1.notes)
    assert l2.learning_rate == 0.05 and np.all(np.isfinite(l2.weight_cov_theory))
    record.update(outcome="named note")


# ------------------------------------------------------------------------------------------------
# schedulers and settings changed during training
# ------------------------------------------------------------------------------------------------


def _loop_with(change: Callable[[Any, FluctuationProbe, int], None], **kw: Any) -> Any:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=kw.pop("weight_decay", 0.0))
    probe = _probe(model, x, y, optimizer=opt, **kw)
    _train(probe, model, opt, x, y, each_step=lambda t: change(opt, probe, t))
    return probe.analyze()


def _in_window(probe: FluctuationProbe) -> bool:
    return probe.phase == "window" and probe.step - probe.plateau_step > 20


LR_IN_WINDOW = [
    ("lr_halved", lambda o: o.param_groups[0].__setitem__("lr", 0.025), r"'lr'\] 0.05 -> 0.025"),
    ("lr_raised", lambda o: o.param_groups[0].__setitem__("lr", 0.06), r"'lr'\] 0.05 -> 0.06"),
    (
        "weight_decay",
        lambda o: o.param_groups[0].__setitem__("weight_decay", 0.01),
        r"'weight_decay'\] 0 -> 0.01",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "match"), LR_IN_WINDOW, ids=lambda v: v)
def test_setting_changed_inside_window_is_refused(
    case: str, mutate: Any, match: str, record: dict
) -> None:
    def change(opt: Any, probe: FluctuationProbe, t: int) -> None:
        if _in_window(probe):
            mutate(opt)

    with pytest.raises(MeasurementError, match=rf"inside the recording window.*{match}") as err:
        _loop_with(change)
    record.update(outcome="named error", exit=exit_code(err.value))


def test_step_lr_scheduler_inside_window_is_refused(record: dict) -> None:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=400, gamma=0.5)
    probe = _probe(model, x, y, optimizer=opt).attach(opt)
    with pytest.raises(MeasurementError, match=r"'lr'\] 0.05 -> 0.025"):
        _train(probe, model, opt, x, y, attached=True, each_step=lambda t: sched.step())
    record.update(outcome="named error", exit=2)


def test_warmup_before_the_plateau_restarts_the_test(record: dict) -> None:
    """A linear warm-up over the first 100 steps: the window runs at the final η, noted."""
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 100))
    probe = _probe(model, x, y, optimizer=opt).attach(opt)
    _train(probe, model, opt, x, y, attached=True, each_step=lambda t: sched.step())
    run = probe.analyze()
    assert run.learning_rate == 0.05 and run.layers[0].learning_rate == 0.05
    assert probe.plateau_step > 100
    assert any("changed 99 time(s) during the burn-in" in n for n in run.notes)
    record.update(outcome="correct number")


def test_scheduler_that_never_settles_is_named(record: dict) -> None:
    """An lr changed every step never leaves the burn-in: the no-plateau error says why."""
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.01)
    probe = _probe(model, x, y, optimizer=opt, steps=800).attach(opt)
    with pytest.raises(MeasurementError, match=r"changed \d+ time\(s\) during the burn-in"):
        _train(probe, model, opt, x, y, steps=800, attached=True, each_step=lambda t: sched.step())
    record.update(outcome="named error", exit=2)


CHANGED_SETTINGS = [
    (
        "momentum_switched_on",
        lambda o, m: o.param_groups[0].__setitem__("momentum", 0.9),
        r"param_groups\[0\]\['momentum'\] = 0.9",
    ),
    (
        "maximize_switched_on",
        lambda o, m: o.param_groups[0].__setitem__("maximize", True),
        r"'maximize'\] = True",
    ),
    (
        "param_group_added",
        lambda o, m: o.add_param_group({"params": [nn.Parameter(torch.zeros(2))]}),
        r"2 parameter group\(s\), 1 when the probe was built",
    ),
    (
        "param_removed",
        lambda o, m: o.param_groups[0]["params"].pop(),
        r"param_groups\[0\]\['params'\] changed",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "match"), CHANGED_SETTINGS, ids=lambda v: v)
def test_other_setting_changed_is_refused(case: str, mutate: Any, match: str, record: dict) -> None:
    def change(opt: Any, probe: FluctuationProbe, t: int) -> None:
        if t == 30:
            mutate(opt, probe)

    with pytest.raises(ConfigError, match=match):
        _loop_with(change)
    record.update(outcome="named error", exit=2)


# ------------------------------------------------------------------------------------------------
# attach()
# ------------------------------------------------------------------------------------------------


def test_attach_misuse_is_named(record: dict) -> None:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt).attach(opt)
    with pytest.raises(ConfigError, match="already attached"):
        probe.attach(opt)
    with pytest.raises(ConfigError, match=r"observe\(\) called while the probe is attached"):
        probe.observe()
    probe.detach()
    probe.observe()
    with pytest.raises(ConfigError, match=r"attach\(\) after 1 observed step"):
        probe.attach(opt)
    other = torch.optim.SGD(model.parameters(), lr=0.05)
    fresh = _probe(model, x, y, optimizer=opt)
    with pytest.raises(ConfigError, match="not the optimizer the probe was built with"):
        fresh.attach(other)
    record.update(outcome="named error", exit=2)


@pytest.mark.parametrize(
    ("opt_kw", "match"),
    [
        ({"lr": 0.02}, r"lr = 0.02, weight_decay = 0, but the probe was built with learning_rate"),
        ({"lr": 0.05, "weight_decay": 0.1}, r"weight_decay = 0.1, but the probe"),
        ({"lr": 0.05, "momentum": 0.9}, r"\['momentum'\] = 0.9"),
    ],
    ids=["lr", "weight_decay", "momentum"],
)
def test_attach_checks_a_learning_rate_probe(opt_kw: dict, match: str, record: dict) -> None:
    model = _mlp()
    x, y = _data()
    probe = _probe(model, x, y, learning_rate=0.05)
    with pytest.raises(ConfigError, match=match):
        probe.attach(torch.optim.SGD(model.parameters(), **opt_kw))
    record.update(outcome="named error", exit=2)


def test_attach_to_a_learning_rate_probe_reads_later_changes(record: dict) -> None:
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, learning_rate=0.05).attach(opt)

    def change(t: int) -> None:
        if _in_window(probe):
            opt.param_groups[0]["lr"] = 0.025

    with pytest.raises(MeasurementError, match=r"0.05 -> 0.025"):
        _train(probe, model, opt, x, y, attached=True, each_step=change)
    record.update(outcome="named error", exit=2)


# ------------------------------------------------------------------------------------------------
# modules that change state or draw random numbers; dtypes and devices
# ------------------------------------------------------------------------------------------------


class WithModule(nn.Module):
    def __init__(self, extra: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.extra = extra
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if isinstance(self.extra, nn.modules.instancenorm._InstanceNorm):
            h = self.extra(h[:, None, :])[:, 0, :]
        else:
            h = self.extra(h)
        return self.fc2(torch.tanh(h))


STATEFUL = [
    ("batchnorm", lambda: nn.BatchNorm1d(3), r"'extra' \(BatchNorm1d\) is in training mode"),
    ("dropout", lambda: nn.Dropout(0.2), r"'extra' \(Dropout\) is in training mode with p = 0.2"),
    (
        "instancenorm_tracking",
        lambda: nn.InstanceNorm1d(1, track_running_stats=True),
        r"'extra' \(InstanceNorm1d\) is in training mode",
    ),
    (
        "batchnorm_no_running_stats",
        lambda: nn.BatchNorm1d(3, track_running_stats=False),
        r"track_running_stats = False",
    ),
]


@pytest.mark.parametrize(("case", "make", "match"), STATEFUL, ids=lambda v: v)
def test_stateful_module_in_train_mode_refused_up_front(
    case: str, make: Any, match: str, record: dict
) -> None:
    model = WithModule(make()).to(torch.float64)
    x, y = _data()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=match) as err:
        _probe(model, x, y, learning_rate=0.05)
    assert "call model.eval()" in str(err.value).lower() or "track_running_stats" in str(err.value)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    record.update(outcome="named error", exit=2)


@pytest.mark.parametrize("where", ["observe", "analyze"])
def test_batchnorm_switched_to_train_mode_later_is_refused(where: str, record: dict) -> None:
    model = WithModule(nn.BatchNorm1d(3)).to(torch.float64).eval()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt)
    if where == "observe":
        model.train()
        with pytest.raises(ConfigError, match=r"observe\(\): module 'extra' \(BatchNorm1d\)"):
            _train(probe, model, opt, x, y)
    else:
        _train(probe, model, opt, x, y)
        model.train()
        with pytest.raises(ConfigError, match=r"analyze\(\): module 'extra' \(BatchNorm1d\)"):
            probe.analyze()
    record.update(outcome="named error", exit=2)


def test_dropout_p0_in_train_mode_is_allowed(record: dict) -> None:
    model = WithModule(nn.Dropout(0.0)).to(torch.float64)
    x, y = _data()
    probe = _probe(model, x, y, learning_rate=0.05)
    assert [lay.name for lay in probe.layers] == ["fc1", "fc2"]
    record.update(outcome="correct number")


@pytest.mark.parametrize(
    ("case", "match"),
    [
        (
            "model_float32",
            r"parameter 'fc1.weight' has dtype torch.float32 but the training inputs",
        ),
        ("one_layer_float32", r"parameter 'fc2.weight' has dtype torch.float32"),
        ("integer_inputs", r"inputs have dtype torch.int64: expected a floating dtype"),
        ("meta_device", r"parameter 'fc1.weight' is on meta but the training inputs are on cpu"),
    ],
)
def test_mixed_dtypes_and_devices_refused_by_name(case: str, match: str, record: dict) -> None:
    model = _mlp()
    x, y = _data()
    if case == "model_float32":
        model = model.float()
    elif case == "one_layer_float32":
        model.fc2.float()
    elif case == "integer_inputs":
        x = x.long()
    else:
        model = model.to("meta")
    with pytest.raises(ConfigError, match=match):
        _probe(model, x, y, learning_rate=0.05)
    record.update(outcome="named error", exit=2)


# ------------------------------------------------------------------------------------------------
# unusual parameters: a scalar, tied weights, frozen ones, ones without a gradient
# ------------------------------------------------------------------------------------------------


class Scaled(nn.Module):
    """An MLP with a learnable 0-dim output scale."""

    def __init__(self) -> None:
        super().__init__()
        self.body = MLP()
        self.scale = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.body(x)


class Tied(nn.Module):
    """Two 3x3 layers sharing one weight matrix (tied), each with its own bias."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 3)
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.out = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.b(torch.tanh(self.a(torch.tanh(self.inp(x)))))))


class Unused(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.spare = nn.Linear(4, 4)  # registered, never called


def test_scalar_parameter_is_probed(record: dict) -> None:
    """A 0-dim parameter (crashed analyze() in _unflat) is a layer of dimension 1."""
    torch.manual_seed(0)
    model = Scaled().to(torch.float64)
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt)
    assert probe.layers[0].name == "model" and probe.layers[0].dim == 1
    _check_curvature(probe, model, x, y, {})
    _train(probe, model, opt, x, y)
    run = probe.analyze()
    assert run.layers[0].k == 1 and np.isfinite(run.layers[0].curvature).all()
    record.update(outcome="correct number")


def test_tied_weights_probed_once(record: dict) -> None:
    torch.manual_seed(0)
    model = Tied().to(torch.float64)
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt)
    names = [lay.param_names for lay in probe.layers]
    assert names == [
        ("inp.weight", "inp.bias"),
        ("a.weight", "a.bias"),
        ("b.bias",),
        ("out.weight", "out.bias"),
    ]
    _check_curvature(probe, model, x, y, {})  # H of the shared weight sums both uses
    _train(probe, model, opt, x, y)
    run = probe.analyze()
    assert any("'b.weight' is tied to 'a.weight'" in n for n in run.notes)
    record.update(outcome="correct number")


@pytest.mark.parametrize("how", ["requires_grad_false", "not_in_optimizer"])
def test_frozen_parameters_not_probed(how: str, record: dict) -> None:
    model = _mlp()
    x, y = _data()
    if how == "requires_grad_false":
        model.fc1.requires_grad_(False)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    else:
        opt = torch.optim.SGD(model.fc2.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt)
    assert [lay.name for lay in probe.layers] == ["fc2"]
    _check_curvature(probe, model, x, y, {})
    _train(probe, model, opt, x, y)
    run = probe.analyze()
    if how == "not_in_optimizer":
        assert any("in no optimizer parameter group" in n and "fc1.weight" in n for n in run.notes)
    record.update(outcome="correct number")


def test_parameter_without_gradient_not_probed(record: dict) -> None:
    torch.manual_seed(0)
    model = Unused().to(torch.float64)
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt)
    assert [lay.name for lay in probe.layers] == ["fc1", "fc2"]
    with pytest.raises(ConfigError, match=r"layers\[0\] = 'spare' matches no module"):
        _probe(model, x, y, optimizer=opt, layers=["spare"])
    _train(probe, model, opt, x, y)
    run = probe.analyze()
    assert any("'spare.weight', 'spare.bias'] do not enter the loss" in n for n in run.notes)
    record.update(outcome="correct number")


# ------------------------------------------------------------------------------------------------
# layer selection: by number, name, glob, type, parameter; groups; refusals
# ------------------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x[:, None, :])).mean(1)  # (n, 2)
        h = torch.cat([h, x[:, :2]], 1)
        return self.fc2(torch.tanh(self.fc1(h)))


SELECTIONS = [
    (
        "all",
        "all",
        [("conv.weight", "conv.bias"), ("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias")],
    ),
    ("number", [2], [("fc1.weight", "fc1.bias")]),
    ("name", ["fc2"], [("fc2.weight", "fc2.bias")]),
    ("glob", ["fc*"], [("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias")]),
    ("type_linear", [nn.Linear], [("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias")]),
    ("type_conv", [nn.Conv1d], [("conv.weight", "conv.bias")]),
    (
        "mixed",
        ["fc*", nn.Conv1d],
        [("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias"), ("conv.weight", "conv.bias")],
    ),
    ("weights_only", ["*.weight"], [("conv.weight",), ("fc1.weight",), ("fc2.weight",)]),
    ("one_weight", ["fc1.weight"], [("fc1.weight",)]),
    ("group", [("fc1", "fc2")], [("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]),
    ("group_of_weights", [("fc1.weight", "fc2.weight")], [("fc1.weight", "fc2.weight")]),
    ("string", "fc1", [("fc1.weight", "fc1.bias")]),
]


@pytest.mark.parametrize(
    ("case", "spec", "want"), SELECTIONS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_layer_selection(case: str, spec: Any, want: list, record: dict) -> None:
    torch.manual_seed(0)
    model = Net().to(torch.float64)
    x, y = _data()
    probe = _probe(model, x, y, learning_rate=0.05, layers=spec)
    assert [lay.param_names for lay in probe.layers] == want
    record.update(outcome="correct selection")


def test_weight_only_layer_curvature_and_analysis(record: dict) -> None:
    """layers=['*.weight']: H blocks of the weights alone; the analysis runs on them."""
    model = _mlp()
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = _probe(model, x, y, optimizer=opt, layers=["*.weight"])
    assert [lay.dim for lay in probe.layers] == [12, 6]
    _check_curvature(probe, model, x, y, {})
    _train(probe, model, opt, x, y)
    run = probe.analyze()
    assert [lr.name for lr in run.layers] == ["fc1.weight", "fc2.weight"]
    assert [lr.n_params for lr in run.layers] == [12, 6]
    record.update(outcome="correct number")


SELECTION_ERRORS = [
    ("duplicate_number", [1, 1], r"selects parameter 'fc1.weight' twice"),
    ("module_and_its_weight", ["fc1", "fc1.weight"], r"selects parameter 'fc1.weight' twice"),
    ("glob_overlap", ["fc*", nn.Linear], r"twice"),
    ("weight_and_bias_apart", ["fc1.weight", "fc1.bias"], r"share layer number 1"),
    ("unknown_name", ["nope"], r"layers\[0\] = 'nope' matches no module.*\['fc1', 'fc2'\]"),
    ("type_absent", [nn.Conv2d], r"torch\.nn\.modules\.conv\.Conv2d: no module of that type"),
    ("type_not_module", [int], r"builtins\.int is not a torch\.nn\.Module subclass"),
    ("zero", [0], r"layers\[0\] = 0 is out of range: expected an integer in \[1, 2\]"),
    ("too_large", [3], r"layers\[0\] = 3 is out of range"),
    ("bool", [True], r"layers\[0\] = True has the wrong type"),
    ("float", [1.5], r"layers\[0\] = 1.5 has the wrong type"),
    ("empty", [], r"layers = \[\]: expected 'all' or a non-empty list"),
    ("empty_group", [()], r"layers\[0\] = \(\): expected a non-empty group"),
    ("bad_in_group", [("fc1", 7)], r"layers\[0\]\[1\] = 7 is out of range"),
]


@pytest.mark.parametrize(
    ("case", "spec", "match"), SELECTION_ERRORS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_layer_selection_refused_by_name(case: str, spec: Any, match: str, record: dict) -> None:
    model = _mlp()
    x, y = _data()
    with pytest.raises(ConfigError, match=match):
        _probe(model, x, y, learning_rate=0.05, layers=spec)
    record.update(outcome="named error", exit=2)


# ------------------------------------------------------------------------------------------------
# the training-loss subset of a large training set
# ------------------------------------------------------------------------------------------------


def test_large_training_set_records_loss_on_a_fixed_subset(record: dict) -> None:
    model = _mlp()
    x, y = _data(n=2500)
    probe = _probe(model, x, y, learning_rate=0.05)
    assert probe.loss_samples == 2048 and probe._x_loss.shape[0] == 2048
    again = _probe(model, x, y, learning_rate=0.05)
    assert torch.equal(probe._x_loss, again._x_loss)  # fixed by the seed
    idx = [int(i) for i in np.flatnonzero((x[:, None, :] == probe._x_loss[None]).all(-1).any(1))]
    want = float(_half_mse(model(x[idx]), y[idx]))
    assert probe.train_loss() == pytest.approx(want, rel=1e-14)
    full = _probe(model, x, y, learning_rate=0.05, loss_samples=2500)
    assert full.train_loss() == pytest.approx(float(_half_mse(model(x), y)), rel=1e-14)
    record.update(outcome="correct number")


# ------------------------------------------------------------------------------------------------
# the state-untouched test
# ------------------------------------------------------------------------------------------------


class Everything(nn.Module):
    """BatchNorm (eval), dropout (eval), a constant buffer, a scalar and tied weights."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.3)
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.out = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.register_buffer("shift", torch.linspace(-0.1, 0.1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.tanh(self.bn(self.inp(x))))
        h = torch.tanh(self.b(torch.tanh(self.a(h))))
        return self.scale * self.out(h) + self.shift


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),  # noqa: NPY002 - the global state must not move
        "python_rng": random.getstate(),
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        va, vb = a["state"][k], b["state"][k]
        assert va.dtype == vb.dtype and torch.equal(va, vb), k
    for n in a["grads"]:
        ga, gb = a["grads"][n], b["grads"][n]
        assert (ga is None) == (gb is None) and (ga is None or torch.equal(ga, gb)), n
    assert a["requires_grad"] == b["requires_grad"] and a["training"] == b["training"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    na, nb = a["numpy_rng"], b["numpy_rng"]
    assert na[0] == nb[0] and np.array_equal(na[1], nb[1]) and na[2:] == nb[2:]
    assert a["python_rng"] == b["python_rng"]


def test_observe_and_analyze_leave_the_model_bitwise_unchanged(record: dict) -> None:
    """state_dict (buffers: BN running stats, num_batches_tracked, a constant), .grad fields,
    requires_grad, module modes and the torch / numpy / python RNG states are bitwise the same
    before and after every observe() and after analyze()."""
    torch.manual_seed(0)
    model = Everything().to(torch.float64)
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        model.bn.running_var.copy_(torch.tensor([1.5, 0.7, 1.1]))
    model.eval()
    x, y = _data()
    opt = torch.optim.SGD(
        [
            {"params": [p for n, p in model.named_parameters() if "bias" not in n]},
            {
                "params": [p for n, p in model.named_parameters() if "bias" in n],
                "weight_decay": 0.02,
            },
        ],
        lr=0.05,
        weight_decay=0.01,
    )
    probe = _probe(model, x, y, optimizer=opt, directions="hessian")
    gen = torch.Generator().manual_seed(1)
    checked = 0
    for _ in range(6000):
        idx = torch.randint(x.shape[0], (5,), generator=gen)
        opt.zero_grad()
        _half_mse(model(x[idx]), y[idx]).backward()
        opt.step()
        before = _snapshot(model)
        probe.observe()
        _assert_same(before, _snapshot(model))
        checked += 1
        if probe.done:
            break
    assert probe.done and checked > probe.plateau_step
    before = _snapshot(model)
    run = probe.analyze()
    _assert_same(before, _snapshot(model))
    assert {lr.name for lr in run.layers} == {"model", "inp", "bn", "a", "b", "out"}
    record.update(outcome="state bitwise unchanged", observed_steps=checked)


# ------------------------------------------------------------------------------------------------
# resources, and the probe CLI's inputs (exit 2 with the key or path named, no traceback)
# ------------------------------------------------------------------------------------------------


def test_recorders_that_cannot_fit_are_refused_up_front(
    monkeypatch: pytest.MonkeyPatch, record: dict
) -> None:
    """The estimate is checked at construction (before training), against the memory limit."""
    model = _mlp()
    x, y = _data()
    monkeypatch.setenv("SGDFLUCT_MEMORY_LIMIT", "2000")
    with pytest.raises(ConfigError, match=r"recorders would need about .* GiB \(layer 'fc1'"):
        _probe(model, x, y, learning_rate=0.05)
    monkeypatch.setenv("SGDFLUCT_MEMORY_LIMIT", str(2**30))
    _probe(model, x, y, learning_rate=0.05)
    record.update(outcome="named error", exit=2)


PROBE_TOML = """
[data]
dataset = "digits"
n_train = 100
[model]
hidden = [4]
loss = "mse"
[sgd]
steps = 4000
record_every = 2
[probe]
window = 400
top_k = 3
"""


def _cli(tmp_path: Any, cfg: Any) -> Any:
    from click.testing import CliRunner

    from sgdfluct.cli import main

    return CliRunner().invoke(main, ["probe", str(cfg), "--out", str(tmp_path / "out")])


CLI_CASES = [
    ("binary", lambda p: p.write_bytes(b"\x00\x01\x02binary"), r"binary|not a text"),
    ("latin1", lambda p: p.write_bytes("[data]\nseed = 0 # caf\xe9\n".encode("latin-1")), "UTF-8"),
    ("folder", lambda p: p.mkdir(), "is a directory"),
    ("missing", lambda p: None, "does not exist"),
    (
        "near_null_rtol_one",
        lambda p: p.write_text(PROBE_TOML + "near_null_rtol = 1.0\n"),
        r"probe\.near_null_rtol = 1\.0 is out of range",
    ),
    (
        "duplicate_layers",
        lambda p: p.write_text(PROBE_TOML + "layers = [1, 1]\n"),
        r"selects parameter '0\.weight' twice",
    ),
    (
        "unknown_layer_name",
        lambda p: p.write_text(PROBE_TOML + 'layers = ["fc9"]\n'),
        r"'fc9' matches no module",
    ),
]


@pytest.mark.parametrize(("case", "make", "match"), CLI_CASES, ids=lambda v: v)
def test_probe_cli_inputs_named(
    tmp_path: Any, case: str, make: Any, match: str, record: dict
) -> None:
    pytest.importorskip("sklearn")
    cfg = tmp_path / "probe.toml"
    make(cfg)
    res = _cli(tmp_path, cfg)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and re.search(match, res.output), res.output
    record.update(outcome="named error", exit=res.exit_code)


def test_probe_cli_symlink_loop_named(tmp_path: Any, record: dict) -> None:
    pytest.importorskip("sklearn")
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.symlink_to(b)
    b.symlink_to(a)
    res = _cli(tmp_path, a)
    assert res.exit_code == 2 and "cannot be read" in res.output and "Traceback" not in res.output
    record.update(outcome="named error", exit=2)
