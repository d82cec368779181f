"""Segmentation readers on tiny trees written in the published layouts, their errors, the
transforms, rare class sampling and the bundled street scenes."""

import re

import numpy as np
import png
import pytest
import torch
from PIL import Image

from mic import ConfigError, DatasetError
from mic.datasets import UnlabeledImageFolder
from mic.datasets.segmentation import (
    ACDC,
    GTA5,
    Cityscapes,
    DarkZurich,
    RareClassSampling,
    SegmentationFolder,
    SegmentationTransform,
    StreetScenes,
    SynthiaRandCityscapes,
    rescale_size,
)
from mic.datasets.segmentation.readers import read_png_unchanged
from mic.datasets.segmentation.sampling import STATS_FILE
from tests.png_helpers import write_raw_png

W, H = 8, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def _image(path, size=(W, H), value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _label(path, array, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(array, np.uint8), mode="L")
    if palette:  # GTA5's labels are palette images whose indices are Cityscapes ids
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    img.save(path)


def _ids(road=7, car=26):
    """A label in Cityscapes ids: road left, car right, one unlabelled (0) pixel."""
    a = np.full((H, W), road, np.uint8)
    a[:, W // 2 :] = car
    a[0, 0] = 0
    return a


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_png_reader_reads_16_bit_colour_with_every_filter(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65535, (5, 7, 3)).astype(np.uint16)
    write_raw_png(tmp_path / "x.png", a, filters=(0, 1, 2, 3, 4))
    assert _same(read_png_unchanged(tmp_path / "x.png"), a)


def test_png_reader_keeps_every_16_bit_sample(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    grey = rng.integers(0, 65536, (9, 13)).astype(np.uint16)
    # written by libraries: pypng (plain and Adam7-interlaced), Pillow (16-bit grey)
    for name, interlace in (("pypng.png", False), ("adam7.png", True)):
        with open(tmp_path / name, "wb") as f:
            png.Writer(13, 9, greyscale=False, bitdepth=16, interlace=interlace).write(
                f, rgb.reshape(9, -1)
            )
        assert _same(read_png_unchanged(tmp_path / name), rgb)
    Image.fromarray(grey).save(tmp_path / "pillow.png")
    assert _same(read_png_unchanged(tmp_path / "pillow.png"), grey)
    # written by the test writer: Paeth and Average rows, the IDAT data over several chunks
    write_raw_png(tmp_path / "paeth.png", rgb, filters=(4, 3, 4, 1, 2), idat_chunks=5)
    assert _same(read_png_unchanged(tmp_path / "paeth.png"), rgb)
    write_raw_png(tmp_path / "grey.png", grey, filters=(4,), idat_chunks=3)
    assert _same(read_png_unchanged(tmp_path / "grey.png"), grey)
    # 8-bit files keep their 8 bits (the SYNTHIA reader refuses them by dtype)
    write_raw_png(tmp_path / "eight.png", (rgb >> 8).astype(np.uint8), filters=(4,))
    assert _same(read_png_unchanged(tmp_path / "eight.png"), (rgb >> 8).astype(np.uint8))


@pytest.mark.parametrize("cut", [0, 8, 40, -20])
def test_png_reader_names_a_truncated_file(tmp_path, cut):
    a = np.random.default_rng(2).integers(0, 65536, (6, 8, 3)).astype(np.uint16)
    write_raw_png(tmp_path / "ok.png", a)
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[:cut])
    with pytest.raises(DatasetError, match=r"cannot read PNG file '.*bad\.png' \(.+\); remove"):
        read_png_unchanged(tmp_path / "bad.png")


def test_gta5_maps_cityscapes_ids_from_palette_labels(tmp_path):
    for name in ("00001", "00002"):
        _image(tmp_path / "images" / f"{name}.png")
        _label(tmp_path / "labels" / f"{name}.png", _ids(), palette=True)
    ds = GTA5(tmp_path)
    assert len(ds) == 2 and ds.num_classes == 19
    image, label = ds[0]
    assert image.size == (W, H)
    assert label[0, 0] == 255 and label[1, 0] == 0 and label[1, -1] == 13  # road 0, car 13
    assert ds.class_pixel_counts(0)[[0, 13]].tolist() == [H * W // 2 - 1, H * W // 2]
    # DAFormer's converted layout
    _label(tmp_path / "labels" / "00001_labelTrainIds.png", np.full((H, W), 18, np.uint8))
    _label(tmp_path / "labels" / "00002_labelTrainIds.png", np.full((H, W), 255, np.uint8))
    assert GTA5(tmp_path, label_format="trainids")[0][1].max() == 18


def test_gta5_labels_that_hold_training_ids_under_the_released_name_are_named(tmp_path):
    """Converted labels (training ids 0..18) saved as labels/<name>.png read as Cityscapes
    ids turn most pixels into ignore and the rest into other classes: the data check names
    the format that reads them; released ids pass."""
    for i, name in enumerate(("00001", "00002", "00003")):
        _image(tmp_path / "released" / "images" / f"{name}.png")
        _label(tmp_path / "released" / "labels" / f"{name}.png", _ids(), palette=True)
        trainids = np.full((H, W), i, np.uint8)  # road, sidewalk, building
        trainids[:, 3 * W // 4 :] = 13  # car
        _image(tmp_path / "converted" / "images" / f"{name}.png")
        _label(tmp_path / "converted" / "labels" / f"{name}.png", trainids)
    assert not [p for p in GTA5(tmp_path / "released").preflight() if not p.warning]
    (problem,) = GTA5(tmp_path / "converted").preflight()
    assert "hold only values 0..18 and 255" in problem.detail
    assert "label_format=trainids" in problem.fix and not problem.warning


def test_training_ids_under_the_released_name_are_named_under_rare_class_sampling(tmp_path):
    """Rare class sampling reads every label file for its statistics; the reader's own check
    of the values (training ids read as released ids) still runs in its data check."""
    for i, name in enumerate(("00001", "00002", "00003")):
        trainids = np.full((H, W), i, np.uint8)  # ignored when read as ids
        trainids[:, 3 * W // 4 :] = 13  # car, read as fence
        trainids[:, :1] = 17  # motorcycle, read as pole: two classes to sample
        _image(tmp_path / "images" / f"{name}.png")
        _label(tmp_path / "labels" / f"{name}.png", trainids)
    problems = RareClassSampling(GTA5(tmp_path), min_pixels=1, cache=False).preflight()
    (problem,) = problems  # (not also the classes the misread labels lack: a wrong warning)
    assert "hold only values 0..18 and 255" in problem.detail
    assert "label_format=trainids" in problem.fix
    # the option reads other files: the fix says under which name (it sent users in a circle)
    assert "labels/00001.png as labels/00001_labelTrainIds.png" in problem.fix
    # one class left to sample: the reader's check names the cause at once
    for name in ("00001", "00002", "00003"):
        trainids = np.zeros((H, W), np.uint8)
        trainids[:, -1] = 13
        _label(tmp_path / "labels" / f"{name}.png", trainids)
    with pytest.raises(DatasetError, match="hold training ids where released ids are read"):
        RareClassSampling(GTA5(tmp_path), min_pixels=1, cache=False)


def test_rare_class_sampling_over_missing_labels_names_them_not_the_empty_statistics(tmp_path):
    _cityscapes(tmp_path, "train", "labelIds")  # released: no *_labelTrainIds.png
    with pytest.raises(DatasetError) as info:
        RareClassSampling(Cityscapes(tmp_path, "train"), min_pixels=1, cache=False)
    message = str(info.value)
    assert message.startswith("Missing label files (2)") and "label_format=labelIds" in message
    assert "fewer than two classes" not in message


def test_cityscapes_label_ids_that_hold_training_ids_are_named(tmp_path):
    for i, city in enumerate(("aachen", "bochum", "cologne")):
        stem = f"{city}_000000_000019"
        _image(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        trainids = np.full((H, W), i, np.uint8)  # road, sidewalk, building
        trainids[:, 3 * W // 4 :] = 13  # car
        _label(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", trainids)
    (problem,) = Cityscapes(tmp_path, "val", label_format="labelIds").preflight(training=False)
    assert "hold only values 0..18 and 255" in problem.detail
    assert "label_format=labelTrainIds" in problem.fix and not problem.warning
    # released ids pass
    _cityscapes(tmp_path / "released", "val", "labelIds")
    released = Cityscapes(tmp_path / "released", "val", label_format="labelIds")
    assert not [p for p in released.preflight(training=False) if not p.warning]


def test_released_ids_under_the_training_id_name_are_named(tmp_path):
    """Released ids that are all below 19 (road 7, sidewalk 8, building 11, pole 17, unlabelled
    0) fall inside the training-id range: read as training ids, road was a traffic sign and
    building a person, without a word; real training ids give both about 1 % of pixels."""
    for city in ("aachen", "bochum", "cologne"):
        stem = f"{city}_000000_000019"
        _image(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        released = np.full((H, W), 11, np.uint8)  # building above
        released[H // 2 :] = 7  # road below
        released[H // 2 :, :2] = 8  # sidewalk
        released[:, -1] = 17  # pole
        released[0, 0] = 0
        _label(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png", released)
    (problem,) = [p for p in Cityscapes(tmp_path, "val").preflight(training=False) if not p.warning]
    assert problem.kind == "label sets that look like released ids where training ids are read"
    assert "% to person (11): in released ids (0..33) 7 and 11 are road and building" in (
        problem.detail
    )
    assert "createTrainIdLabelImgs" in problem.fix
    # training ids of the same scene pass
    _cityscapes(tmp_path / "converted", "val", "labelTrainIds")
    converted = Cityscapes(tmp_path / "converted", "val")
    assert not [p for p in converted.preflight(training=False) if not p.warning]


def test_released_ids_above_18_under_training_id_names_get_the_released_ids_fix(tmp_path):
    """Released ids 21..26 (vegetation, sky, person, car) read as training ids were told to
    raise num_classes, which no Cityscapes setup wants."""
    for city in ("aachen", "bochum"):
        stem = f"{city}_000000_000019"
        _image(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        released = np.full((H, W), 21, np.uint8)
        released[H // 2 :] = 26
        _label(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelTrainIds.png", released)
    problems = [p for p in Cityscapes(tmp_path, "val").preflight(training=False) if not p.warning]
    assert {p.kind for p in problems} == {"label files with ids outside the mapping"}
    assert all("Are they released ids (*_labelIds.png) saved under the training-id name?" in
               p.fix and "num_classes" not in p.fix for p in problems)  # fmt: skip
    beyond = np.full((H, W), 40, np.uint8)  # outside the released ids too: another scheme
    _label(next((tmp_path / "gtFine").rglob("aachen*_labelTrainIds.png")), beyond)
    problems = [p for p in Cityscapes(tmp_path, "val").preflight(training=False) if not p.warning]
    assert all("labels of another scheme are read by SegmentationFolder" in p.fix for p in problems)
    assert not any("num_classes" in p.fix for p in problems)  # (Cityscapes' ids: a fixed table)


def test_an_image_or_label_whose_extension_differs_in_case_is_named_not_left_out(tmp_path):
    _cityscapes(tmp_path, "val", "labelTrainIds")
    image = next((tmp_path / "leftImg8bit").rglob("*_leftImg8bit.png"))
    image.rename(image.with_suffix(".PNG"))  # it was left out without a word
    with pytest.raises(DatasetError, match=r"1 Cityscapes images in .* end in '\.PNG'"):
        Cityscapes(tmp_path, "val")
    image.with_suffix(".PNG").rename(image)
    # another format beside the reader's (a re-saved frame): left out with its label before
    other = sorted((tmp_path / "leftImg8bit").rglob("*_leftImg8bit.png"))[-1]
    Image.open(other).save(other.with_suffix(".jpg"))
    Cityscapes(tmp_path, "val")  # both formats of one frame: none left out
    other.unlink()
    with pytest.raises(DatasetError) as info:
        Cityscapes(tmp_path, "val")
    assert str(info.value).startswith(
        f"1 Cityscapes images in '{tmp_path / 'leftImg8bit' / 'val'}' are .jpg files (e.g. "
        f"'{other.with_suffix('.jpg')}') beside "
    ) and "they would be left out (and their labels with them); save them as .png" in str(
        info.value
    )
    other.with_suffix(".jpg").unlink()
    label = next((tmp_path / "gtFine").rglob("*_labelTrainIds.png"))
    label.rename(label.with_suffix(".PNG"))
    with pytest.raises(DatasetError) as info:
        Cityscapes(tmp_path, "val")
    assert str(info.value).startswith("Missing label files (1)")
    said = f"'{label.with_suffix('.PNG')}' is there: file names are read case-sensitively"
    assert said in str(info.value)


def test_a_missing_label_beside_one_of_another_format_is_not_to_be_renamed(tmp_path):
    _cityscapes(tmp_path, "val", "labelTrainIds")
    _cityscapes(tmp_path, "val", "labelIds")
    next((tmp_path / "gtFine").rglob("*_labelTrainIds.png")).unlink()
    with pytest.raises(DatasetError) as info:
        Cityscapes(tmp_path, "val")
    said = "a label file of another format (label_format=labelIds), whose ids differ"
    assert said in str(info.value)
    assert "rename '" not in str(info.value)  # renaming released ids made wrong training ids


def test_ids_outside_the_mapping_in_a_sample_say_how_many_were_read(tmp_path):
    folder = tmp_path / "lbl"
    for i in range(8):
        _image(tmp_path / "img" / f"{i}.png")
        _label(folder / f"{i}.png", np.full((H, W), 7 if i % 2 else 1, np.uint8))
    ds = SegmentationFolder(tmp_path / "img", folder, num_classes=3)
    problems = ds.preflight(label_sample=4)
    assert {p.kind for p in problems} == {"label files with ids outside the mapping"}
    assert problems[0].fix.startswith(
        f"{len(problems)} of the 4 label files read (evenly spread over 8) hold them: "
        "others may too."
    )
    assert "num_classes" in problems[0].fix
    assert "evenly spread" not in ds.preflight(label_sample=8)[0].fix  # every file read


def test_synthia_reads_16_bit_labels_from_the_red_channel(tmp_path):
    _image(tmp_path / "RGB" / "0000000.png")
    label = np.zeros((H, W, 3), np.uint16)
    label[..., 0] = 3  # road
    label[:, :2, 0] = 8  # car
    label[0, 0, 0] = 22  # lane marking: ignored, as published
    label[..., 1] = 1234  # instance ids in green
    (tmp_path / "GT" / "LABELS").mkdir(parents=True)
    write_raw_png(tmp_path / "GT" / "LABELS" / "0000000.png", label, filters=(1, 4))
    _, y = SynthiaRandCityscapes(tmp_path)[0]
    assert y[0, 0] == 255 and y[1, 0] == 13 and y[1, -1] == 0
    # an 8-bit label in the 16-bit release layout is refused with a hint
    _label(tmp_path / "GT" / "LABELS" / "0000000.png", np.zeros((H, W)))
    with pytest.raises(DatasetError, match=r"not a 16-bit colour PNG.*source_label_format"):
        SynthiaRandCityscapes(tmp_path)[0]
    (problem,) = SynthiaRandCityscapes(tmp_path).preflight()  # 8-bit grey: the wrong mode
    assert problem.kind == "label files of the wrong mode"
    assert problem.fix.startswith("SYNTHIA's GT/LABELS hold 16-bit colour PNGs")
    # 8-bit colour (a header of the right mode): each file named, the fix said once
    _image(tmp_path / "RGB" / "0000001.png")
    for name in ("0000000.png", "0000001.png"):
        Image.new("RGB", (W, H)).save(tmp_path / "GT" / "LABELS" / name)
    problems = SynthiaRandCityscapes(tmp_path).preflight()
    assert [p.detail for p in problems] == [
        f"not a 16-bit colour PNG (got uint8 with shape {(H, W, 3)})"
    ] * 2
    from mic.datasets.preflight import format_problems

    message = format_problems(problems, "SYNTHIA")[0]
    assert message.count("The release stores the class id in the red channel") == 1


def test_gta5_names_a_missing_folder_a_root_one_level_up_and_other_formats(tmp_path):
    _image(tmp_path / "GTA5" / "images" / "00001.jpg")
    with pytest.raises(DatasetError, match=re.escape(f"'{tmp_path / 'GTA5'}' holds 'images/'")):
        GTA5(tmp_path)
    # one level too low: the folder above holds it
    (tmp_path / "GTA5" / "images" / "sub").mkdir()
    with pytest.raises(DatasetError, match="the folder given lies inside it"):
        GTA5(tmp_path / "GTA5" / "images")
    with pytest.raises(DatasetError, match=r"it holds \.jpg images, and the reader reads \*\.png"):
        GTA5(tmp_path / "GTA5")
    _image(tmp_path / "GTA5" / "images" / "00001.png")
    colour = np.zeros((H, W, 3), np.uint8)
    colour[...] = (128, 64, 128)  # Cityscapes' road colour: a colour rendering of the labels
    (tmp_path / "GTA5" / "labels").mkdir()
    Image.fromarray(colour).save(tmp_path / "GTA5" / "labels" / "00001.png")
    (problem,) = [p for p in GTA5(tmp_path / "GTA5").preflight() if "mode" in p.kind]
    assert "a colour (RGB) rendering holds no ids" in problem.fix


def _cityscapes(root, split="val", fmt="labelIds"):
    for city, frame in (("frankfurt", "000000_000294"), ("lindau", "000001_000019")):
        _image(root / "leftImg8bit" / split / city / f"{city}_{frame}_leftImg8bit.png")
        lab = _ids() if fmt == "labelIds" else np.where(_ids() == 7, 0, 13).astype(np.uint8)
        _label(root / "gtFine" / split / city / f"{city}_{frame}_gtFine_{fmt}.png", lab)


def test_cityscapes_and_acdc_roots_a_level_off_name_the_root(tmp_path):
    _cityscapes(tmp_path / "cityscapes", "val")
    with pytest.raises(DatasetError, match=r"cityscapes' holds 'leftImg8bit/': is that the"):
        Cityscapes(tmp_path, "val")
    with pytest.raises(DatasetError, match="the folder given lies inside it"):
        Cityscapes(tmp_path / "cityscapes" / "leftImg8bit", "val")
    image = tmp_path / "acdc" / "rgb_anon" / "night" / "val" / "GOPR0" / "x_rgb_anon.png"
    _image(image)
    with pytest.raises(DatasetError, match=r"acdc' holds 'rgb_anon/': is that the dataset"):
        ACDC(tmp_path, "val")
    # the root is right but a split was not downloaded: said so, not "check the path" alone
    with pytest.raises(DatasetError, match=r"leftImg8bit' holds val/ but not 'train/' \(a split"):
        Cityscapes(tmp_path / "cityscapes", "train")


def test_cityscapes_label_ids_and_train_ids(tmp_path):
    _cityscapes(tmp_path, "val", "labelIds")
    _cityscapes(tmp_path, "val", "labelTrainIds")
    a = Cityscapes(tmp_path, "val", label_format="labelIds")
    b = Cityscapes(tmp_path, "val", label_format="labelTrainIds")
    assert len(a) == 2
    assert np.array_equal(a[0][1][1:], b[0][1][1:])
    # unlabelled target images need no label files
    _image(tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    assert isinstance(Cityscapes(tmp_path, "train", labelled=False)[0], Image.Image)


def test_acdc_released_and_flattened_layouts(tmp_path):
    for cond in ("fog", "night"):
        name = "GOPR0475_frame_000041"
        _image(tmp_path / "rgb_anon" / cond / "val" / "GOPR0475" / f"{name}_rgb_anon.png")
        _label(
            tmp_path / "gt" / cond / "val" / "GOPR0475" / f"{name}_gt_labelTrainIds.png",
            np.zeros((H, W)),
        )
    ds = ACDC(tmp_path, "val", conditions=("fog", "night"))
    assert len(ds) == 2 and ds[1][1].max() == 0
    flat = tmp_path / "flat"
    _image(flat / "rgb_anon" / "val" / "GOPR0475" / "GOPR0475_frame_000041_rgb_anon.png")
    _label(
        flat / "gt" / "val" / "GOPR0475" / "GOPR0475_frame_000041_gt_labelTrainIds.png",
        np.zeros((H, W)),
    )
    assert len(ACDC(flat, "val")) == 1
    assert len(ACDC(tmp_path, "val", conditions="night")) == 1  # one condition, not its letters
    assert len(ACDC(tmp_path, "val", conditions="fog, night")) == 2
    with pytest.raises(DatasetError, match=re.escape("(it has ['fog', 'night']): to read only")):
        ACDC(tmp_path, "val")  # the released layout without rain and snow
    with pytest.raises(ConfigError, match=re.escape("got ['dusk']")):
        ACDC(tmp_path, "val", conditions="dusk")


def test_dark_zurich_unlabelled_train_and_labelled_val(tmp_path):
    _image(
        tmp_path
        / "rgb_anon"
        / "train"
        / "night"
        / "GOPR0351"
        / "GOPR0351_frame_000159_rgb_anon.png"
    )
    _image(
        tmp_path / "rgb_anon" / "val" / "night" / "GOPR0356" / "GOPR0356_frame_000321_rgb_anon.png"
    )
    _label(
        tmp_path / "gt" / "val" / "night" / "GOPR0356" / "GOPR0356_frame_000321_gt_labelIds.png",
        _ids(),
    )
    assert len(DarkZurich(tmp_path, "train")) == 1
    _, y = DarkZurich(tmp_path, "val", labelled=True, label_format="labelIds")[0]
    assert y[1, 0] == 0 and y[1, -1] == 13


def test_bad_input_errors(tmp_path):
    _image(tmp_path / "images" / "00001.png")
    bad = _ids()
    bad[2, 2] = 40  # not a Cityscapes id
    _label(tmp_path / "labels" / "00001.png", bad)
    with pytest.raises(DatasetError, match=r"ids \[40\] outside the Cityscapes label-id mapping"):
        GTA5(tmp_path)[0]
    _label(tmp_path / "labels" / "00001.png", np.zeros((H + 1, W)))
    with pytest.raises(DatasetError, match=r"is 8 x 6 but its label .* is 8 x 7"):
        GTA5(tmp_path)[0]
    _image(tmp_path / "images" / "00002.png")
    with pytest.raises(DatasetError, match=r"Missing label files \(1\): .*00002.png"):
        GTA5(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        Cityscapes(tmp_path / "nowhere")


def test_a_strip_image_scaled_keeps_at_least_one_pixel_a_side():
    """A 400 x 2 px strip under scale (64, 32) rounded to 64 x 0 and the resize failed
    (ValueError: height and width must be > 0) after the data check had only warned."""
    assert rescale_size(400, 2, (64, 32)) == (64, 1)
    strip = Image.fromarray(np.zeros((2, 400, 3), np.uint8))
    t = SegmentationTransform(scale=(64, 32), crop_size=(8, 8), mean=[0.5] * 3, std=[0.5] * 3)
    x, y = t(strip, np.zeros((2, 400), np.uint8))
    assert x.shape == (3, 8, 8) and (y[1:] == 255).all()


def test_transform_resize_crop_pad_and_flip():
    assert rescale_size(1914, 1052, (1280, 720)) == (1280, 704)
    assert rescale_size(2048, 1024, (1024, 512)) == (1024, 512)
    image = Image.fromarray(np.full((6, 8, 3), 255, np.uint8))
    label = np.zeros((6, 8), np.uint8)
    x, y = SegmentationTransform(crop_size=(10, 12), mean=[0.5] * 3, std=[0.5] * 3)(image, label)
    assert x.shape == (3, 10, 12) and y.shape == (10, 12)
    assert (y[6:] == 255).all() and (y[:, 8:] == 255).all() and (y[:6, :8] == 0).all()
    assert (x[:, 6:] == 0).all() and (x[:, :6, :8] == 1).all()  # padding is the mean colour
    lr = np.zeros((4, 4), np.uint8)
    lr[:, 2:] = 1
    flips = {
        SegmentationTransform(flip=True)(Image.new("RGB", (4, 4)), lr)[1][0, 0].item()
        for _ in range(20)
    }
    assert flips == {0, 1}
    with pytest.raises(ConfigError, match="cannot be combined with crop_size"):
        SegmentationTransform(crop_size=(4, 4), keep_label_size=True)
    # test transform: image resized, label kept at full resolution
    x, y = SegmentationTransform(scale=(4, 2), keep_label_size=True)(
        Image.new("RGB", (8, 4)), lr.repeat(2, 1)
    )
    assert x.shape == (3, 2, 4) and y.shape == (4, 8)


def test_folders_with_a_segmentation_transform(tmp_path):
    _image(tmp_path / "img" / "a" / "1.jpg")
    _label(tmp_path / "lbl" / "a" / "1_mask.png", np.ones((H, W)))
    ds = SegmentationFolder(
        tmp_path / "img", tmp_path / "lbl", SegmentationTransform(), "_mask.png", 3
    )
    x, y = ds[0]
    assert x.shape == (3, H, W) and y.dtype == torch.int64 and ds.classes == ["0", "1", "2"]
    target = UnlabeledImageFolder(
        tmp_path / "img", transform=SegmentationTransform(crop_size=(4, 4))
    )
    assert target[0].shape == (3, 4, 4)


def test_rare_class_sampling_statistics_are_cached_and_rare_classes_drawn(tmp_path):
    for i in range(6):
        _image(tmp_path / "images" / f"{i:05d}.png")
        lab = np.full((H, W), 7, np.uint8)  # road everywhere
        if i == 5:
            lab[:, :3] = 33  # bicycle in one image only
        _label(tmp_path / "labels" / f"{i:05d}.png", lab)
    ds = GTA5(tmp_path, transform=SegmentationTransform())
    rcs = RareClassSampling(ds, temperature=0.01, min_pixels=5, min_crop_ratio=0.5)
    assert (tmp_path / STATS_FILE).is_file()
    assert rcs.sampled_classes == [0, 18] and float(rcs.probabilities[1]) > 0.99
    assert rcs.classes == ds.classes  # the wrapped dataset's names
    torch.manual_seed(0)
    assert sum(int((rcs[0][1] == 18).any()) for _ in range(10)) >= 9
    # a second construction reads the cache instead of the labels
    ds.class_pixel_counts = None
    assert RareClassSampling(ds, min_pixels=5).sampled_classes == [0, 18]


def test_rare_class_sampling_reads_a_sample_once_however_often_it_re_crops(tmp_path):
    for i in range(2):
        _image(tmp_path / "images" / f"{i:05d}.png")
        lab = np.full((H, W), 7, np.uint8)
        lab[:2, :2] = 33  # 4 bicycle pixels: few crops hold enough of them
        _label(tmp_path / "labels" / f"{i:05d}.png", lab)
    ds = GTA5(tmp_path, transform=SegmentationTransform(crop_size=(3, 3)))
    rcs = RareClassSampling(ds, temperature=1.0, min_pixels=3, min_crop_ratio=1.0, cache=False)
    loads, crops = [], []
    load, transform = ds.load, ds.transform
    ds.load = lambda i: loads.append(i) or load(i)
    ds.transform = lambda *sample: crops.append(1) or transform(*sample)
    torch.manual_seed(0)
    for _ in range(5):
        rcs[0]
    assert len(loads) == 5 and len(crops) > 5  # re-crops, but one read per sample


def test_rare_class_sampling_warns_of_a_share_no_crop_can_hold(tmp_path, caplog):
    """min_pixels x min_crop_ratio (HRDA's 3000 x 2.0) above a small trial's crop area:
    every sample was cropped 11 times in vain, without a word."""
    import logging

    for i in range(2):
        _image(tmp_path / "images" / f"{i:05d}.png")
        lab = np.full((H, W), 7, np.uint8)
        lab[:2, :2] = 33
        _label(tmp_path / "labels" / f"{i:05d}.png", lab)
    ds = GTA5(tmp_path, transform=SegmentationTransform(crop_size=(3, 3)))
    with caplog.at_level(logging.WARNING):
        RareClassSampling(ds, min_pixels=3, min_crop_ratio=3.0, cache=False)
    assert "min_crop_ratio = 9 px of the sampled class, as many as a 3 x 3 crop" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        RareClassSampling(ds, min_pixels=3, min_crop_ratio=2.0, cache=False)
    assert "min_crop_ratio =" not in caplog.text


def test_street_scenes_are_reproducible_and_confusable():
    a = StreetScenes("target", "test", count=6)
    b = StreetScenes("target", "test", count=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.num_classes == 8 and set(a.labels.unique().tolist()) <= set(range(8))
    assert len(StreetScenes("source", "train", count=4, labelled=False)[0].shape) == 3


def test_gta5_ids_outside_the_mapping_name_no_label_mapping_gta5_does_not_take(tmp_path):
    for name in ("00001", "00002"):
        ids = np.full((H, W), 7, np.uint8)  # road
        ids[:, -2:] = 40  # no Cityscapes label id
        _image(tmp_path / "images" / f"{name}.png")
        _label(tmp_path / "labels" / f"{name}.png", ids)
    problems = [p for p in GTA5(tmp_path).preflight() if not p.warning]
    assert problems and all(p.kind == "label files with ids outside the mapping" for p in problems)
    assert problems[0].fix.endswith(
        "They are read as Cityscapes label-id values (the reader's label_format); labels of "
        "another scheme are read by SegmentationFolder with a label mapping (mic-train: "
        "dataset=seg_folders; docs/own_dataset.md)."
    )


def test_a_label_format_of_the_other_family_names_the_reader_and_its_word(tmp_path):
    """dataset.source_label_format=labelIds on GTA5 said only "label_format must be one of
    ['ids', 'trainids']", naming neither the reader nor what it calls that format."""
    from mic.datasets.segmentation import GTA5, Cityscapes

    with pytest.raises(ConfigError, match=r"^GTA5 label_format must be one of \['ids', 'trainids'"
                       r"\], got 'labelIds'; GTA5 calls 'labelIds' 'ids'"):  # fmt: skip
        GTA5(tmp_path, label_format="labelIds")
    with pytest.raises(ConfigError, match=r"^Cityscapes label_format .*Cityscapes calls "
                       r"'trainids' 'labelTrainIds'"):  # fmt: skip
        Cityscapes(tmp_path, label_format="trainids")


def test_a_root_one_level_too_high_points_at_the_folder_that_holds_the_whole_layout(tmp_path):
    """Dark Zurich's root given one level too high was pointed at ACDC's folder beside it
    (the first one holding an rgb_anon/), whose layout then failed one level further."""
    from mic.datasets.files import root_hint

    (tmp_path / "acdc" / "rgb_anon" / "fog" / "val").mkdir(parents=True)
    (tmp_path / "dark_zurich" / "rgb_anon" / "val" / "night").mkdir(parents=True)
    hint = root_hint(tmp_path / "rgb_anon" / "val" / "night", tmp_path)
    assert hint == f"; '{tmp_path / 'dark_zurich'}' holds 'rgb_anon/': is that the dataset root?"


def test_labels_all_saved_as_jpeg_say_so(tmp_path):
    """Every label a .jpg: the message said only "missing label files" (the JPEG hint came
    when at most half were missing)."""
    from mic.datasets.segmentation import GTA5

    for i in range(3):
        _image(tmp_path / "images" / f"0000{i}.png")
        _image(tmp_path / "labels" / f"0000{i}.jpg")
    with pytest.raises(DatasetError, match=r"Missing label files \(3\).*00000\.jpg' is there, but "
                       r"JPEG files are never read as labels.*Save the labels as PNG files named "
                       r"'00000\.png'"):  # fmt: skip
        GTA5(tmp_path)
