import pytest
import torch

import mic
from mic import ConfigError, PseudoLabels, PseudoLabelWeighting


def _pseudo(conf, valid=None):
    conf = torch.tensor(conf)
    return PseudoLabels(
        labels=torch.zeros_like(conf, dtype=torch.long), confidence=conf, valid=valid
    )


def test_quality_is_share_of_confident_elements_as_a_tensor():
    pseudo = _pseudo([[0.99, 0.5], [0.97, 0.968]])
    w = PseudoLabelWeighting("quality", tau=0.968)(pseudo)
    assert isinstance(w, torch.Tensor) and w.shape == (2, 2)
    torch.testing.assert_close(w, torch.full((2, 2), 0.75))


def test_prob_mode_uses_each_confidence_and_none_mode_ones():
    pseudo = _pseudo([0.2, 0.9, 0.6])
    torch.testing.assert_close(PseudoLabelWeighting("prob")(pseudo), torch.tensor([0.2, 0.9, 0.6]))
    torch.testing.assert_close(PseudoLabelWeighting("none")(pseudo), torch.ones(3))


def test_quality_weights_are_a_tensor_of_their_own_and_only_pseudo_labels_are_weighted():
    # they were q expanded (one element in memory): a loss that scaled them in place
    # ended in torch's 'more than one element of the written-to tensor refers to a single
    # memory location'; a confidence tensor given for the pseudo-labels, in an AttributeError
    pseudo = _pseudo([[0.99, 0.5], [0.97, 0.968]])
    w = PseudoLabelWeighting("quality", tau=0.968)(pseudo)
    w.mul_(2)
    torch.testing.assert_close(w, torch.full((2, 2), 1.5))
    with pytest.raises(ConfigError, match="the weighting takes PseudoLabels, got a Tensor"):
        PseudoLabelWeighting()(pseudo.confidence)


def test_invalid_elements_weigh_zero_but_count_in_quality():
    valid = torch.tensor([1, 1, 0, 0])
    pseudo = _pseudo([0.99, 0.99, 0.99, 0.1], valid=valid)
    w = PseudoLabelWeighting("quality", tau=0.9)(pseudo)
    torch.testing.assert_close(w, torch.tensor([0.75, 0.75, 0.0, 0.0]))


@pytest.mark.parametrize("mode", ["quality", "prob", "none"])
def test_valid_is_read_as_a_mask_whatever_its_values(mode):
    # the first adaptation iteration refuses a 0/255 mask (check_confidence), but a
    # thresholded mask can be all 0 then: after it, 255 weighed its elements 255 times
    pseudo = _pseudo(
        [0.99, 0.5, 0.97, 0.2], valid=torch.tensor([255, 0, 255, 0], dtype=torch.uint8)
    )
    ones = _pseudo([0.99, 0.5, 0.97, 0.2], valid=torch.tensor([True, False, True, False]))
    weighting = PseudoLabelWeighting(mode, tau=0.9)
    torch.testing.assert_close(weighting(pseudo), weighting(ones))
    assert weighting(pseudo).max() <= 1


def test_lists_of_tensors_are_weighted_jointly():
    # e.g. detection: one confidence tensor per image, of different lengths
    conf = [torch.tensor([0.99, 0.1]), torch.tensor([]), torch.tensor([0.95, 0.97, 0.99])]
    pseudo = PseudoLabels(labels=None, confidence=conf)
    w = PseudoLabelWeighting("quality", tau=0.96)(pseudo)
    assert [t.shape for t in w] == [c.shape for c in conf]
    torch.testing.assert_close(torch.cat(w), torch.full((5,), 3 / 5))


def test_quality_of_nothing_is_zero():
    w = PseudoLabelWeighting("quality")
    assert w.quality(torch.tensor([])).item() == 0.0


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="weighting"):
        PseudoLabelWeighting("confidence")


def _mic_gradient(accumulate: int, batch: int) -> torch.Tensor:
    """The gradient of MIC's loss (nothing withheld) over four target images, of which the
    teacher is confident on the first and third alone, in ``accumulate`` micro-batches."""
    from mic.tasks.segmentation import SegmentationTask

    student = torch.nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        student.weight.zero_()
        student.bias.zero_()
        student.weight[0, 0, 1, 1] = 8.0  # confident where channel 0 is lit
    x = torch.zeros(4, 3, 16, 16)
    x[0, 0] = x[2, 0] = 1.0
    y = torch.zeros(4, 16, 16, dtype=torch.long)
    source = [(x[i : i + batch], y[i : i + batch]) for i in range(0, 4, batch)]
    target = [x[i : i + batch] for i in range(0, 4, batch)]
    term = mic.MaskedImageConsistency(mic.BlockMasker(4, 0.0))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    teacher = mic.EMATeacher(student)
    loop = mic.AdaptationLoop(
        SegmentationTask(2), student, mic.UDAMethod({"mic": term}), optimizer, source, target,
        1, teacher=teacher, accumulate=accumulate,
    )  # fmt: skip
    loop.run()
    return student.weight.grad.clone()


def test_q_is_the_optimiser_steps_over_its_micro_batches():
    # k micro-batches of B / k stand for one batch of B: one q over the four images (0.5),
    # not one per image (1, 0, 1, 0), which weighed the confident images alone, twice over
    whole = _mic_gradient(1, 4)
    assert whole.norm() > 0
    for accumulate in (2, 4):
        torch.testing.assert_close(_mic_gradient(accumulate, 4 // accumulate), whole)
