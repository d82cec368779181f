import pytest
import torch
import torch.nn.functional as F

import mic
from mic import ConfigError, DatasetError
from mic.tasks.classification import ClassificationTask, Classifier


def test_loss_is_weighted_cross_entropy():
    task = ClassificationTask(4)
    model = Classifier("tiny_cnn", 4, bottleneck_dim=8).eval()
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    w = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0])
    logits = model(x)
    torch.testing.assert_close(task.loss(model, x, y), F.cross_entropy(logits, y))
    want = (F.cross_entropy(logits, y, reduction="none") * w).mean()
    torch.testing.assert_close(task.loss(model, x, y, w), want)


def test_predict_and_pseudo_label():
    task = ClassificationTask(3)
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    pseudo = task.pseudo_label(probs)
    assert pseudo.labels.tolist() == [1, 0]
    torch.testing.assert_close(pseudo.confidence, torch.tensor([0.7, 0.5]))
    model = Classifier("tiny_cnn", 3, bottleneck_dim=8).eval()
    p = task.predict(model, torch.randn(2, 3, 8, 8))
    torch.testing.assert_close(p.sum(1), torch.ones(2))


def test_metrics_accuracy_mean_class_and_per_class():
    task = ClassificationTask(3)
    metric = task.metric()
    # class 0: 3 of 4 right; class 1: 0 of 1; class 2: 1 of 1
    targets = torch.tensor([0, 0, 0, 0, 1, 2])
    preds = torch.tensor([0, 0, 0, 1, 0, 2])
    metric.update(F.one_hot(preds, 3).float(), targets)
    scores = metric.compute()
    assert scores["accuracy"].item() == pytest.approx(4 / 6)
    assert scores["mean_class_accuracy"].item() == pytest.approx((0.75 + 0 + 1) / 3)
    assert scores["per_class_accuracy"].tolist() == pytest.approx([0.75, 0.0, 1.0])


def test_mean_class_accuracy_leaves_out_classes_absent_from_the_targets():
    """Even when something was predicted as the absent class: the mean is over the classes
    the test set holds, and the absent class's accuracy is undefined (NaN)."""
    metric = ClassificationTask(3).metric()
    targets = torch.tensor([0, 1, 1, 1])  # class 2 absent
    preds = torch.tensor([0, 1, 2, 1])  # ... yet predicted once
    metric.update(F.one_hot(preds, 3).float(), targets)
    scores = metric.compute()
    assert scores["accuracy"].item() == pytest.approx(3 / 4)
    assert scores["mean_class_accuracy"].item() == pytest.approx((1 + 2 / 3) / 2)
    per_class = scores["per_class_accuracy"]
    assert per_class[:2].tolist() == pytest.approx([1.0, 2 / 3]) and per_class[2].isnan()


def test_collate_rejects_labels_outside_the_class_range():
    task = ClassificationTask(3)
    samples = [(torch.zeros(3, 2, 2), 1), (torch.zeros(3, 2, 2), 7)]
    with pytest.raises(DatasetError, match=r"label 7 is outside the class range \[0, 2\]"):
        task.collate(samples)
    with pytest.raises(DatasetError, match=r"label -1 is negative, .* has no ignore label"):
        task.collate([(torch.zeros(3, 2, 2), 1), (torch.zeros(3, 2, 2), -1)])
    with pytest.raises(DatasetError, match="integer class indices"):
        task.collate([(torch.zeros(3, 2, 2), 0.5)])
    for bad in (torch.eye(3)[:2].long(), torch.tensor([1, 0], dtype=torch.bfloat16)):
        with pytest.raises(DatasetError, match="integer class indices"):
            task.check_targets(bad)  # one-hot rows, or a float type
    with pytest.raises(DatasetError, match="integer class indices"):
        task.check_targets(torch.tensor([True, False]))
    images = task.collate([torch.zeros(3, 2, 2)] * 2)
    assert images.shape == (2, 3, 2, 2)


def test_classifier_exposes_features_and_named_parts():
    model = Classifier("tiny_cnn", 5, bottleneck_dim=16)
    logits, feats = model.forward_with_features(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 5) and feats.shape == (2, 16)
    assert {n for n, _ in model.named_children()} == {"backbone", "bottleneck", "head"}
    assert Classifier("tiny_cnn", 5, bottleneck_dim=0)(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_bad_task_settings_are_config_errors():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ClassificationTask(1)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ClassificationTask(0)
    with pytest.raises(ConfigError, match="primary_metric"):
        ClassificationTask(3, primary_metric="f1")


def test_a_subclass_s_primary_metric_attribute_is_its_default():
    # it was overwritten by the constructor's default, 'accuracy': best.pt ranked by another
    # score than the subclass named
    class Balanced(ClassificationTask):
        primary_metric = "mean_class_accuracy"

    class OwnScore(ClassificationTask):
        primary_metric = "f1"

        def metric(self):
            return super().metric()

    assert Balanced(3).primary_metric == "mean_class_accuracy"
    assert Balanced(3, primary_metric="accuracy").primary_metric == "accuracy"
    assert OwnScore(3).primary_metric == "f1"  # a metric of its own may name its scores
    with pytest.raises(ConfigError, match="primary_metric"):

        class Typo(ClassificationTask):
            primary_metric = "acuracy"

        Typo(3)


@pytest.mark.parametrize("model_classes", [2, 5])
def test_loss_and_predict_refuse_a_model_of_another_class_count(model_classes):
    task = ClassificationTask(3)
    model = Classifier("tiny_cnn", model_classes, bottleneck_dim=8)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    message = f"the model predicts {model_classes} classes but the task has 3"
    with pytest.raises(ConfigError, match=message):
        task.loss(model, x, y)
    with pytest.raises(ConfigError, match=message):
        task.predict(model, x)


def test_loss_refuses_a_model_that_returns_no_class_scores():
    task = ClassificationTask(3)
    with pytest.raises(ConfigError, match=r"B x C class scores.*shape \(4, 3, 8, 8\)"):
        task.loss(torch.nn.Identity(), torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ConfigError, match="got tuple"):
        task.predict(lambda x: (x, x), torch.randn(4, 3, 8, 8))


@pytest.mark.parametrize("method", ["mean_teacher", "dann"])
def test_a_class_count_mismatch_stops_the_first_iteration_not_the_evaluation(method):
    """A 5-class model on a 3-class task used to train to the end, then fail in torchmetrics."""
    from mic.tasks.classification import DomainAdversarial, JointSourceSupervision
    from tests.helpers import tiny_loaders

    task, source, target, _ = tiny_loaders()
    student = Classifier("tiny_cnn", 5, bottleneck_dim=8)
    if method == "dann":
        terms = {"source": JointSourceSupervision(), "dann": DomainAdversarial(8, 16)}
        uda, teacher = mic.UDAMethod(terms), None
    else:
        uda, teacher = mic.mean_teacher(), mic.EMATeacher(student, 0.9)
    optimizer = torch.optim.Adam([*student.parameters(), *uda.parameters()])
    loop = mic.AdaptationLoop(task, student, uda, optimizer, source, target, 3, teacher=teacher)
    with pytest.raises(ConfigError, match="the model predicts 5 classes but the task has 3"):
        loop.run()
    assert loop.step == 0


def test_predict_on_one_image_notes_that_it_takes_a_batch():
    # one (C, H, W) image failed deep in torch's BatchNorm with no word of the batch
    task = ClassificationTask(num_classes=3)
    model = Classifier("small_cnn", num_classes=3).eval()
    with pytest.raises((RuntimeError, ValueError)) as caught:  # the model's own error
        task.predict(model, torch.rand(3, 32, 32))
    assert "give image[None]" in "".join(getattr(caught.value, "__notes__", []))
    assert task.predict(model, torch.rand(3, 32, 32)[None]).shape == (1, 3)
