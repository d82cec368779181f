import pytest
import torch

from mic import BlockMasker, ConfigError, StrongAugmentation
from mic.augmentation import blur_kernel_size


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mask_is_constant_on_each_block():
    masker = BlockMasker(block_size=4, ratio=0.5)
    out = masker(torch.ones(6, 3, 16, 24), _gen())
    blocks = out.unfold(2, 4, 4).unfold(3, 4, 4)  # B, C, 4, 6, 4, 4
    flat = blocks.reshape(*blocks.shape[:4], -1)
    assert torch.all(flat.amax(-1) == flat.amin(-1))
    assert torch.all(out[:, 0] == out[:, 1])  # one mask for all channels
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_share_of_withheld_blocks_is_about_ratio():
    for ratio in (0.3, 0.7):
        masker = BlockMasker(block_size=2, ratio=ratio)
        keep = masker.mask(torch.zeros(64, 3, 32, 32), _gen(1))
        withheld = 1 - keep.mean().item()  # 64 x 256 = 16384 independent blocks
        assert withheld == pytest.approx(ratio, abs=0.02)


def test_grid_uses_rounded_block_counts_and_keeps_shape():
    masker = BlockMasker(block_size=32, ratio=0.5)
    x = torch.ones(2, 3, 100, 70)  # round(100/32)=3, round(70/32)=2
    keep = masker.mask(x, _gen())
    assert keep.shape == (2, 1, 100, 70)
    assert masker(x, _gen()).shape == x.shape


def test_withheld_pixels_are_zero_on_normalised_images_and_fill_otherwise():
    x = torch.full((4, 3, 8, 8), 5.0)
    out = BlockMasker(block_size=2, ratio=0.5)(x, _gen())
    assert set(out.unique().tolist()) == {0.0, 5.0}
    fill = [0.1, 0.2, 0.3]
    out = BlockMasker(block_size=2, ratio=0.5, fill=fill)(x, _gen())
    for c, v in enumerate(fill):
        values = out[:, c].unique()
        assert len(values) == 2 and values[1] == 5.0
        assert values[0].item() == pytest.approx(v)


def test_each_image_gets_its_own_mask_and_each_call_a_new_one():
    masker = BlockMasker(block_size=2, ratio=0.7)
    g = _gen()
    a = masker.mask(torch.zeros(8, 3, 16, 16), g)
    b = masker.mask(torch.zeros(8, 3, 16, 16), g)
    assert len({tuple(m.flatten().tolist()) for m in a}) == 8
    assert not torch.equal(a, b)


def test_seeded_generator_reproduces_masking_and_augmentation():
    aug = StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3)
    masker = BlockMasker(block_size=4, ratio=0.7, augmentation=aug)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    assert torch.equal(masker(x, _gen(3)), masker(x, _gen(3)))
    assert not torch.equal(masker(x, _gen(3)), masker(x, _gen(4)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_device_and_dtype_are_kept(dtype):
    aug = StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3)
    masker = BlockMasker(block_size=4, ratio=0.7, augmentation=aug)
    x = torch.rand(4, 3, 16, 16, dtype=dtype)
    out = masker(x, _gen())
    assert out.dtype == dtype and out.device == x.device and out.shape == x.shape


def test_augmentation_coins_are_drawn_per_image():
    # with jitter only, about jitter_p of the images change, and not all-or-none per batch
    aug = StrongAugmentation(jitter_p=0.5, blur_p=0.0)
    x = torch.rand(400, 3, 8, 8) * 0.8 + 0.1
    out = aug(x, _gen())
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.4 < changed.float().mean().item() < 0.6
    blur = StrongAugmentation(jitter_p=0.0, blur_p=0.5)
    changed = (blur(x, _gen(1)) - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.4 < changed.float().mean().item() < 0.6


def test_augmentation_off_is_identity_and_jitter_acts_on_unit_range():
    x = torch.rand(8, 3, 8, 8) * 2 - 1  # normalised with mean 0.5, std 0.5
    off = StrongAugmentation(jitter_p=0.0, blur_p=0.0, mean=[0.5] * 3, std=[0.5] * 3)
    assert torch.equal(off(x, _gen()), x)
    on = StrongAugmentation(jitter_p=1.0, blur_p=0.0, mean=[0.5] * 3, std=[0.5] * 3)
    y = on(x, _gen())
    assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5  # [0, 1] mapped back
    assert not torch.allclose(y, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_images_left_alone_are_returned_as_given(dtype):
    # an image that draws neither jitter nor blur, and channels past RGB, are not passed
    # through the normalisation's round trip (in bfloat16 that moved pixels by 2/255)
    aug = StrongAugmentation(
        jitter_p=0.5, blur_p=0.5, mean=[0.4, 0.5, 0.6, 0.5], std=[0.2, 0.3, 0.25, 1.0]
    )
    x = (torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0))).to(dtype)
    out = aug(x, _gen())
    assert torch.equal(out[:, 3], x[:, 3])
    same = (out[:, :3] == x[:, :3]).flatten(1).all(1)
    assert 5 < int(same.sum()) < 40  # about a quarter of 64 draw neither
    assert not (out[~same] == x[~same]).all()


@pytest.mark.parametrize("jitter", ["published", "torchvision"])
def test_jitter_factors_stay_within_strength(jitter):
    # a constant grey image: torchvision's brightness scales it by a factor in [1 - s, 1 + s]
    # (contrast and saturation blend it with itself); the published brightness adds a shift in
    # [-s, s], then contrast scales by a factor in [1 - s, 1 + s]
    aug = StrongAugmentation(jitter_p=1.0, strength=0.2, blur_p=0.0, jitter=jitter)
    x = torch.full((200, 3, 4, 4), 0.5)
    out = aug(x, _gen())[:, 0, 0, 0]
    low, high = (0.4, 0.6) if jitter == "torchvision" else (0.3 * 0.8, 0.7 * 1.2)
    assert out.min() >= low - 1e-4 and out.max() <= high + 1e-4
    assert out.max() - out.min() > 0.1
    if jitter == "published":  # shift and scale together reach beyond a scale alone
        assert out.min() < 0.4 or out.max() > 0.6


def test_published_jitter_is_kornia_0_5_colorjitter_today_s_colorjiggle():
    """The published code ran kornia 0.5's ColorJitter (brightness adds factor - 1, contrast
    scales); kornia's ColorJiggle keeps those operations. In the order mic fixes, with the
    factors mic drew, it gives mic's images; the default (torchvision's formulas) does not."""
    from kornia.augmentation import ColorJiggle

    from mic.core.streams import uniform

    x = torch.rand(6, 3, 12, 12)
    u = uniform(
        _gen(3), 6, 7, device="cpu"
    )  # StrongAugmentation's draws: coin, 3 factors, hue, blur x 2
    jiggle = ColorJiggle(0.2, 0.2, 0.2, 0.2, p=1.0, order=[0, 1, 2, 3])
    params = jiggle.forward_parameters(x.shape)
    for i, key in enumerate(("brightness", "contrast", "saturation"), start=1):
        params[f"{key}_factor"] = 0.8 + 0.4 * u[:, i]
    params["hue_factor"] = 0.2 * (2 * u[:, 4] - 1)
    want = jiggle(x, params=params)
    for jitter, same in (("published", True), ("torchvision", False)):
        aug = StrongAugmentation(jitter_p=1.0, blur_p=0.0, jitter=jitter)
        assert torch.allclose(aug(x, _gen(3)), want, atol=1e-6) is same, jitter
    with pytest.raises(ConfigError, match="jitter must be one of"):
        StrongAugmentation(jitter="kornia")


@pytest.mark.parametrize(
    "shape,k", [((3, 3, 32, 40), 3), ((2, 1, 64, 64), 7), ((1, 3, 224, 224), 23)]
)
def test_blur_equals_kornia_with_one_sigma_per_image(shape, k):
    from kornia.filters import gaussian_blur2d

    from mic.augmentation import gaussian_blur

    x = torch.rand(shape, dtype=torch.float64)
    sigma = torch.linspace(0.15, 1.15, shape[0], dtype=torch.float64)
    want = gaussian_blur2d(x, (k, k), torch.stack([sigma, sigma], 1), border_type="reflect")
    torch.testing.assert_close(gaussian_blur(x, sigma, k), want)


def test_blur_kernel_is_odd_and_about_a_tenth_of_the_side():
    assert blur_kernel_size(512) == 51
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(32) == 3
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(1, 300))


def test_masker_without_augmentation_option():
    x = torch.rand(2, 3, 8, 8)
    masker = BlockMasker(block_size=4, ratio=0.0)  # nothing withheld, no augmentation
    assert torch.equal(masker(x, _gen()), x)


@pytest.mark.parametrize("kwargs", [{"block_size": 0}, {"ratio": 1.5}])
def test_bad_masker_settings(kwargs):
    with pytest.raises(ConfigError):
        BlockMasker(**kwargs)


def test_bad_augmentation_settings():
    with pytest.raises(ConfigError):
        StrongAugmentation(jitter_p=2.0)
    with pytest.raises(ConfigError, match="jitter_p must be a probability"):
        StrongAugmentation(jitter_p="0.5")  # (a TypeError of '<=')
    with pytest.raises(ConfigError, match="strength must lie in"):
        StrongAugmentation(strength=None)
    import numpy as np  # NumPy's numbers and 0-d tensors are numbers

    assert StrongAugmentation(np.float32(0.5), torch.tensor(0.25)).strength == 0.25
    with pytest.raises(ConfigError):
        StrongAugmentation(mean=[0.5, 0.5, 0.5])


@pytest.mark.parametrize("augmented", [False, True])
def test_masked_images_keep_the_channels_last_layout_they_came_in(augmented):
    """Under channels_last=true the loop's batches are channels last; MIC's masked view came
    back contiguous, and the student ran its masked branch in the other layout."""
    images = torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    augmentation = StrongAugmentation(mean=[0.5] * 3, std=[0.5] * 3) if augmented else None
    masker = BlockMasker(4, 0.5, augmentation=augmentation)
    out = masker(images, torch.Generator().manual_seed(0))
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = masker(images.contiguous(), torch.Generator().manual_seed(0))
    assert plain.is_contiguous() and torch.equal(plain, out)
    if augmented:
        again = augmentation(images, torch.Generator().manual_seed(1))
        assert again.is_contiguous(memory_format=torch.channels_last)


def test_the_masker_and_the_teacher_print_their_settings():
    """print(method) showed 'BlockMasker()' and an EMATeacher without its alpha."""
    from mic import EMATeacher

    assert repr(BlockMasker(32, 0.5)) == "BlockMasker(block_size=32, ratio=0.5)"
    shown = repr(EMATeacher(torch.nn.Linear(2, 2), alpha=0.9, buffers="ema"))
    assert shown.startswith("EMATeacher(\n  alpha=0.9, buffers='ema', norm='batch'\n")
