import pytest
import torch
from torch import nn

from mic import ConfigError, EMATeacher
from mic.core.teacher import unwrap

from .helpers import tiny_model


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 2))


def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        for b in model.buffers():
            if b.is_floating_point():
                b.add_(torch.rand(b.shape, generator=g))
            else:
                b.add_(3)


def test_step_zero_copies_parameters_and_buffers():
    student = _bn_net()
    teacher = EMATeacher(student, alpha=0.9)
    _perturb(student, 1)
    teacher.update(student, 0)
    for (k, t), s in zip(teacher.model.state_dict().items(), student.state_dict().values()):
        assert torch.equal(t, s), k


@pytest.mark.parametrize(
    "step,alpha", [(1, 0.9), (3, 0.9), (9, 0.9), (50, 0.9), (2, 0.999), (5000, 0.999)]
)
def test_ema_formula_matches_hand_computation(step, alpha):
    student = _bn_net()
    teacher = EMATeacher(student, alpha=alpha)
    _perturb(student, step)
    before = [p.clone() for p in teacher.model.parameters()]
    teacher.update(student, step)
    a = min(1 - 1 / (step + 1), alpha)
    assert teacher.decay(step) == pytest.approx(a)
    for t, t0, s in zip(teacher.model.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, a * t0 + (1 - a) * s)


def test_warm_up_follows_the_student_closely_at_first():
    # a = 1 - 1/(t+1) < alpha early on: at step 1 the teacher is the plain mean of both
    student = _bn_net()
    teacher = EMATeacher(student, alpha=0.999)
    t0 = [p.clone() for p in teacher.model.parameters()]
    _perturb(student, 7)
    teacher.update(student, 1)
    for t, a, b in zip(teacher.model.parameters(), t0, student.parameters()):
        torch.testing.assert_close(t, (a + b) / 2)


def _buffers_after(policy: str):
    student = _bn_net()
    teacher = EMATeacher(student, alpha=0.9, buffers=policy)
    old = {k: v.clone() for k, v in teacher.model.named_buffers()}
    _perturb(student, 3)
    teacher.update(student, 4)
    return old, dict(teacher.model.named_buffers()), dict(student.named_buffers())


def test_buffer_policy_own_keeps_teacher_buffers():
    old, new, _ = _buffers_after("own")
    for k in old:
        assert torch.equal(old[k], new[k])


def test_buffer_policy_copy_takes_student_buffers():
    _, new, student = _buffers_after("copy")
    for k in new:
        assert torch.equal(new[k], student[k])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_teacher_keeps_its_own_value_where_the_student_is_not_finite(bad):
    student = _bn_net()
    teacher = EMATeacher(student, alpha=0.9, buffers="ema")
    _perturb(student, 2)
    with torch.no_grad():
        student[0].weight[1, 2] = bad
        student[1].running_var[3] = bad
        # finite, but its norm overflows float32: averaged like any other value
        student[3].bias[0] = 1e30
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    teacher.update(student, 4)
    after, a = teacher.model.state_dict(), teacher.decay(4)
    for key, index in (("0.weight", (1, 2)), ("1.running_var", (3,))):
        assert after[key][index] == before[key][index]
        mask = torch.ones_like(after[key], dtype=torch.bool)
        mask[index] = False
        expected = a * before[key] + (1 - a) * student.state_dict()[key]
        torch.testing.assert_close(after[key][mask], expected[mask])
    assert after["3.bias"][0] == pytest.approx((1 - a) * 1e30, rel=1e-5)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def test_an_update_off_the_cpu_reads_no_value_back():
    """On a GPU a read-back would synchronise with the host at every update
    (benchmarks/sync_check.py runs it there); the meta device, which holds no values and
    refuses to give any, stands in for a GPU here."""
    student = _bn_net().to("meta")
    teacher = EMATeacher(student, alpha=0.9, buffers="ema")
    teacher.update(student, 4)
    assert all(p.device.type == "meta" for p in teacher.model.parameters())


def test_the_device_path_mends_exactly_what_the_cpu_path_mends():
    """Off the CPU every value is mended over runs of tensors flattened into one; the values
    must be those of mending each tensor alone, across runs of another dtype or too large."""
    from mic.core.teacher import _mend_all

    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 3, 2), (40,), (1,), (7, 2)]
    dtypes = [
        torch.float32,
        torch.float32,
        torch.float16,
        torch.float16,
        torch.float32,
        torch.float32,
    ]
    new = [torch.randn(s, generator=g).to(d) for s, d in zip(shapes, dtypes)]
    old = [torch.randn(s, generator=g).to(d) for s, d in zip(shapes, dtypes)]
    new[0][1, 2], new[2][1, 0, 1], new[3][7], new[5][6, 1] = (
        float("nan"),
        float("inf"),
        -float("inf"),
        float("nan"),
    )
    expected = [torch.where(torch.isfinite(n), n, o) for n, o in zip(new, old)]
    for size in (1, 16, 30, 1 << 24):  # a run of one tensor each, ..., one run per dtype
        mended = _mend_all(new, old, size)
        assert [m.shape for m in mended] == [n.shape for n in new]
        assert [m.dtype for m in mended] == dtypes
        assert all(torch.equal(m, e) for m, e in zip(mended, expected))
    assert _mend_all([], []) == []


def test_buffer_policy_ema_averages_float_and_copies_integer_buffers():
    old, new, student = _buffers_after("ema")
    a = min(1 - 1 / 5, 0.9)
    torch.testing.assert_close(
        new["1.running_mean"], a * old["1.running_mean"] + (1 - a) * student["1.running_mean"]
    )
    assert torch.equal(new["1.num_batches_tracked"], student["1.num_batches_tracked"])


def test_prediction_has_no_gradients_and_no_dropout():
    from mic.tasks.classification import ClassificationTask

    student = _bn_net()
    teacher = EMATeacher(student, alpha=0.9, norm="running")
    x = torch.randn(8, 4)
    task = ClassificationTask(2)
    p1, p2 = teacher.predict(task, x), teacher.predict(task, x)
    assert not p1.requires_grad
    assert torch.equal(p1, p2)  # dropout off
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()  # a parent's .train() must not switch dropout back on
    assert torch.equal(teacher.predict(task, x), p1)


def test_norm_batch_uses_batch_statistics_and_running_uses_buffers():
    from mic.tasks.classification import ClassificationTask

    task = ClassificationTask(2)
    x = torch.randn(16, 4) * 5 + 3
    student = _bn_net()
    running = EMATeacher(student, norm="running")
    batch = EMATeacher(student, norm="batch")
    ref = student.eval()(x).softmax(1)
    torch.testing.assert_close(running.predict(task, x), ref)
    assert not torch.allclose(batch.predict(task, x), ref)
    bn = batch.model[1]
    assert bn.num_batches_tracked.item() == 1  # "own" buffers track the target batches
    assert batch.model[2].training is False  # dropout still off


def test_update_unwraps_a_ddp_like_wrapper():
    class Wrapper(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    student = tiny_model()
    teacher = EMATeacher(student, alpha=0.9)
    _perturb(student, 2)
    teacher.update(Wrapper(student), 0)
    for t, s in zip(teacher.model.parameters(), student.parameters()):
        assert torch.equal(t, s)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"buffers": "bogus"}, {"norm": "bogus"}])
def test_bad_settings_raise_config_errors(kwargs):
    with pytest.raises(ConfigError):
        EMATeacher(_bn_net(), **kwargs)


def test_a_model_holding_a_module_beside_others_is_no_wrapper():
    # a `module` child beside a head: the teacher copied the `module` alone, without the head
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.module, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.module(x))

    teacher = EMATeacher(Net(), alpha=0.9)
    assert isinstance(teacher.model, Net)
    assert teacher(torch.randn(3, 4)).shape == (3, 2)


def test_a_compiled_student_is_followed_as_the_model_inside():
    student = tiny_model()
    teacher = EMATeacher(torch.compile(student), alpha=0.9)
    assert not hasattr(teacher.model, "_orig_mod")
    _perturb(student, 2)
    teacher.update(torch.compile(student), 0)  # its state dict's keys are _orig_mod.<name>
    for t, s in zip(teacher.model.parameters(), student.parameters()):
        assert torch.equal(t, s)


@pytest.mark.parametrize("step", [0, 7])  # 7: a resumed run's first update is no step 0
def test_a_student_whose_layers_were_registered_anew_is_refused(step):
    # the same shapes in another order: every later step averaged the head into the other
    # layer, silently
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.aux = nn.Linear(4, 4), nn.Linear(4, 4)

    student = Net()
    teacher = EMATeacher(student, alpha=0.9)
    del student.head
    student.head = nn.Linear(4, 4)  # now after aux
    with pytest.raises(ConfigError, match="registered in another order"):
        teacher.update(student, step)


def test_a_teacher_of_another_model_or_a_fractional_step_is_refused():
    # parameters of other names but the same shapes were averaged silently from a resumed
    # run's first update; a step of 1.5 gave a fractional decay
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.aux = nn.Linear(4, 4), nn.Linear(4, 4)

    teacher = EMATeacher(Other(), alpha=0.9)
    with pytest.raises(
        ConfigError,
        match=r"not the student's architecture: its parameters are named otherwise \(first: "
        r"the teacher's 'fc1.weight', the student's 'head.weight'\)",
    ):
        teacher.update(Net(), 3)
    with pytest.raises(ConfigError, match=r"the teacher's '1.weight', the student's None\)"):
        two, one = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 4))
        EMATeacher(two).update(one, 3)  # (the student's side was shown as '')
    student = Net()
    with pytest.raises(ConfigError, match=r"must be an int >= 0 \(the iteration\), got 1\.5"):
        EMATeacher(student, alpha=0.9).update(student, 1.5)


def test_a_student_moved_after_the_teacher_is_named():
    student = tiny_model()
    teacher = EMATeacher(student, alpha=0.9)
    teacher.update(student, 0)
    student.to("meta")
    with pytest.raises(ConfigError, match=r"move the teacher with it \(teacher.to\(device\)\)"):
        teacher.update(student, 1)


def test_a_student_of_another_dtype_is_averaged_in_the_teachers():
    # an fp32 EMA of a bf16 student keeps the small steps that bf16 would round away (it
    # failed in torch's lerp on a CPU)
    student = tiny_model()
    teacher = EMATeacher(student, alpha=0.999)
    teacher.update(student, 0)
    student.to(torch.bfloat16)
    before = [p.clone() for p in teacher.model.parameters()]
    teacher.update(student, 10)
    for t, b, s in zip(teacher.model.parameters(), before, student.parameters()):
        assert t.dtype == torch.float32
        torch.testing.assert_close(t, torch.lerp(b, s.float(), 1 - teacher.decay(10)))


def test_a_model_with_a_module_and_its_own_parameter_is_no_wrapper():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(4, 2)
            self.temperature = nn.Parameter(torch.ones(()))

    class Wrapper(nn.Module):  # like DistributedDataParallel
        def __init__(self, m):
            super().__init__()
            self.module = m

    assert isinstance(unwrap(Scaled()), Scaled)
    assert isinstance(unwrap(Wrapper(Scaled())), Scaled)  # one wrapper, not the model inside
    inner = Scaled()
    assert unwrap(Wrapper(torch.compile(inner))) is inner
    assert unwrap(torch.compile(Wrapper(inner))) is inner


def test_alpha_of_any_real_type_is_taken_and_a_bool_is_refused():
    assert EMATeacher(tiny_model(), alpha=torch.tensor(0.5).numpy()[()]).alpha == 0.5
    with pytest.raises(ConfigError, match="alpha"):
        EMATeacher(tiny_model(), alpha=True)


def test_the_teachers_model_predicts_without_dropout_from_the_start():
    teacher = EMATeacher(nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)))
    x = torch.randn(4, 8)
    assert not teacher.model.training
    assert torch.equal(teacher.model(x), teacher.model(x))
