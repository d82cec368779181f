"""``SegmentationFolder`` on data as users bring it, on tiny files written here: images and
masks in one folder, JPEG labels, 1-bit masks, photos with an EXIF orientation whose labels
were drawn on the stored pixels, grey labels saved as RGB, and the ``dataset=seg_folders``
key named by the label-suffix hint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mic import DatasetError
from mic.datasets.preflight import check_datasets, collecting_problems, format_problems
from mic.datasets.segmentation import SegmentationFolder
from mic.datasets.segmentation.readers import read_label
from mic.experiment import load_config
from tests.helpers import seg_tree, two_class_label, write_label, write_png

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (16, 12)  # W x H


def _one_folder(folder, n=3, image_ext=".jpg", label_name="{}.png"):
    """``n`` images ``<i><image_ext>`` and their masks ``label_name.format(i)`` side by side."""
    for i in range(n):
        write_png(folder / f"{i:03d}{image_ext}", value=40 * i + 20, size=SIZE)
        write_label(folder / label_name.format(f"{i:03d}"), two_class_label(SIZE))
    return folder


def _message(dataset, role="source"):
    with pytest.raises(DatasetError) as info:
        check_datasets({role: dataset})
    return str(info.value)


# ------------------------------------------------------------ images and masks in one folder
def test_masks_beside_their_images_are_not_images(tmp_path):
    folder = _one_folder(tmp_path / "data")  # 000.jpg + 000.png, ...
    ds = SegmentationFolder(folder, folder, num_classes=2)
    assert [(i.name, lab.name) for i, lab in ds.samples] == [
        ("000.jpg", "000.png"),
        ("001.jpg", "001.png"),
        ("002.jpg", "002.png"),
    ]
    assert ds.preflight() == []
    image, label = ds.load(1)
    assert np.asarray(image).mean() > 50  # the photo, not a mask (ids 0/1)
    assert set(np.unique(label)) == {0, 1}


def test_masks_named_by_a_suffix_beside_their_images_are_not_images(tmp_path):
    folder = _one_folder(tmp_path / "data", image_ext=".png", label_name="{}_mask.png")
    ds = SegmentationFolder(folder, folder, num_classes=2, label_suffix="_mask.png")
    assert [i.name for i, _ in ds.samples] == ["000.png", "001.png", "002.png"]
    assert all(lab.name.endswith("_mask.png") for _, lab in ds.samples)
    assert ds.preflight() == []


@pytest.mark.parametrize(
    ("image_ext", "label_name", "suffix"),
    [(".jpg", "{}.png", ".png"), (".png", "{}_mask.png", "_mask.png")],
)
def test_unlabelled_target_images_leave_out_the_masks_beside_them(
    tmp_path, image_ext, label_name, suffix
):
    from mic.datasets import UnlabeledImageFolder

    folder = _one_folder(tmp_path / "data", image_ext=image_ext, label_name=label_name)
    ds = UnlabeledImageFolder(folder, label_suffix=suffix)
    assert [p.name for p in ds.files] == [f"00{i}{image_ext}" for i in range(3)]
    assert np.asarray(ds[0]).mean() > 10  # a photo (a mask holds ids 0 and 1)
    problems = ds.preflight()
    assert [p.warning for p in problems] == [True] * 3
    assert problems[0].file == str(folder / label_name.format("000"))
    assert len(UnlabeledImageFolder(folder)) == 6  # without label_suffix every image is taken


def test_unlabelled_png_images_are_not_their_own_labels(tmp_path):
    from mic.datasets import UnlabeledImageFolder

    for i in range(3):
        write_png(tmp_path / f"{i}.png", value=40 * i + 20, size=SIZE)
    ds = UnlabeledImageFolder(tmp_path, label_suffix=".png")
    assert len(ds) == 3 and ds.preflight() == []


def test_mic_train_warns_of_masks_in_the_target_folder_and_leaves_them_out(tmp_path):
    from tests.cli import run_mic_train
    from tests.helpers import seg_folder_overrides

    target = _one_folder(tmp_path / "target", n=4)  # 4 photos and their 4 masks
    overrides = seg_folder_overrides(tmp_path)
    overrides = [o for o in overrides if not o.startswith("dataset.target_images=")]
    run = run_mic_train(
        [*overrides, f"dataset.target_images={target}", f"hydra.run.dir={tmp_path / 'run'}"]
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout + run.stderr
    assert "Files left out of the unlabelled images as the label of an image beside them (4)" in (
        text
    )
    assert "target 4," in text  # the sample counts of the data check


def test_labels_in_a_folder_inside_the_image_folder_are_not_images(tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        write_png(root / f"{i}.png", size=SIZE)
        write_label(root / "labels" / f"{i}.png", two_class_label(SIZE))
    ds = SegmentationFolder(root, root / "labels", num_classes=2)
    assert [i.relative_to(root).as_posix() for i, _ in ds.samples] == ["0.png", "1.png"]
    assert ds.preflight() == []


def test_one_misnamed_label_among_good_ones_is_to_be_renamed_not_a_new_suffix(tmp_path):
    """A suffix that reads the one misnamed file would lose the others: the advice is to
    rename it; when every label is named otherwise, the suffix that reads them."""
    for i in range(4):
        write_png(tmp_path / "img" / f"{i}.png", size=SIZE)
        name = "2_x.png" if i == 2 else f"{i}.png"
        write_label(tmp_path / "lbl" / name, two_class_label(SIZE))
    with pytest.raises(DatasetError, match=r"Missing label files \(1\): '.*2\.png'") as info:
        SegmentationFolder(tmp_path / "img", tmp_path / "lbl", num_classes=2)
    assert "The other 3 label files are read as named" in str(info.value)
    assert "2_x.png' to '2.png'" in str(info.value) and "label_suffix" not in str(info.value)
    for i in (0, 1, 3):
        os.replace(tmp_path / "lbl" / f"{i}.png", tmp_path / "lbl" / f"{i}_x.png")
    with pytest.raises(DatasetError, match=r"Missing label files \(4\)") as info:
        SegmentationFolder(tmp_path / "img", tmp_path / "lbl", num_classes=2)
    assert "label_suffix=_x.png" in str(info.value)


def test_images_that_are_their_own_label_name_the_suffix_of_the_masks_beside_them(tmp_path):
    folder = _one_folder(tmp_path / "data", image_ext=".png", label_name="{}_mask.png")
    with pytest.raises(DatasetError, match="is its own label file") as info:
        SegmentationFolder(folder, folder, num_classes=2)  # label_suffix=.png: each image
    assert info.value.option == "label_suffix=_mask.png"  # mic-train names the override
    assert "000_mask.png' are there" in str(info.value)
    assert "pass label_suffix=_mask.png" in str(info.value)
    # through the seg_folders config: the dataset's key, and the one that sets the source's
    from mic.experiment import build_datasets
    from tests.helpers import seg_folder_overrides

    overrides = seg_folder_overrides(tmp_path / "cfg")
    overrides += [f"dataset.source_images={folder}", f"dataset.source_labels={folder}"]
    with pytest.raises(DatasetError) as info:
        build_datasets(load_config(overrides))
    alone = "this split's alone: ++dataset.source.dataset.label_suffix=_mask.png"
    assert f"set dataset.label_suffix=_mask.png (read by source, target and test; {alone})" in (
        str(info.value)
    )


# ------------------------------------------------------------------------ JPEG labels
@pytest.mark.parametrize("suffix", [".jpg", "_mask.JPEG"])
def test_a_jpeg_label_suffix_is_refused(tmp_path, suffix):
    root = seg_tree(tmp_path / "seg", n=2)
    with pytest.raises(DatasetError, match="JPEG is lossy") as info:
        SegmentationFolder(root / "img", root / "lbl", num_classes=2, label_suffix=suffix)
    assert "Save the labels as PNG files" in str(info.value)
    # unlabelled: no label is read, nothing to refuse
    assert len(SegmentationFolder(root / "img", None, label_suffix=suffix)) == 2


def _as_jpeg(folder):
    """Every PNG of ``folder`` saved as JPEG in its place."""
    for path in sorted(folder.glob("*.png")):
        Image.open(path).save(path.with_suffix(".jpg"), quality=75)
        path.unlink()


def _problems(images, labels):
    with collecting_problems():
        return _message(SegmentationFolder(images, labels, num_classes=2))


def test_jpeg_files_beside_missing_labels_are_not_offered_as_labels(tmp_path):
    root = seg_tree(tmp_path / "seg", n=2)
    _as_jpeg(root / "lbl")
    message = _problems(root / "img", root / "lbl")
    assert "Missing label files (2)" in message
    assert "0.jpg' are there, but they are JPEG files, never read as labels" in message
    assert "label_suffix=.jpg" not in message
    # one JPEG among PNG labels: said too (it was a bare "add the missing ones")
    root = seg_tree(tmp_path / "one", n=4)
    Image.open(root / "lbl" / "2.png").save(root / "lbl" / "2.jpg", quality=75)
    (root / "lbl" / "2.png").unlink()
    message = _problems(root / "img", root / "lbl")
    assert "Missing label files (1)" in message
    assert "The other 3 label files are read as named; '" in message
    assert "2.jpg' is there, but JPEG files are never read as labels" in message
    # grey images with grey labels saved as JPEG: the labels' format, no swap
    root = seg_tree(tmp_path / "grey", n=2)
    for path in sorted((root / "img").glob("*.png")):
        Image.open(path).convert("L").save(path)
    _as_jpeg(root / "lbl")
    message = _problems(root / "img", root / "lbl")
    assert "never read as labels" in message and "swapped" not in message
    # the folders swapped (label maps as the images, colour photos as the labels): said so
    root = seg_tree(tmp_path / "swapped", n=2)
    _as_jpeg(root / "img")
    assert "the image and label folders look swapped" in _problems(root / "lbl", root / "img")


def test_a_jpeg_file_is_never_read_as_a_label_whatever_its_name(tmp_path):
    path = tmp_path / "0.png"
    Image.fromarray(two_class_label(SIZE)).save(path, format="JPEG")
    with pytest.raises(DatasetError, match="is a JPEG file; JPEG is lossy"):
        read_label(path)


# ------------------------------------------------------------------------ 1-bit masks
def test_one_bit_masks_are_read_as_ids_0_and_1(tmp_path):
    root = seg_tree(tmp_path / "seg", n=2, labels=False)
    for i in range(2):
        mask = two_class_label(SIZE).astype(bool)
        (root / "lbl").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "lbl" / f"{i}.png")
    assert Image.open(root / "lbl" / "0.png").mode == "1"
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    assert ds.preflight() == []
    _, label = ds.load(0)
    assert label.dtype == np.uint8
    assert np.array_equal(label, two_class_label(SIZE))


# ------------------------------------------------------------------ EXIF-rotated photos
def _phone_photos(root, n=2):
    """JPEGs whose stored pixels are 16 x 12 (W x H) with EXIF orientation 6 (shown 12 x 16)
    and labels drawn on the stored pixels (16 x 12)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    for i in range(n):
        (root / "img").mkdir(parents=True, exist_ok=True)
        stored = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        stored[:, SIZE[0] // 2 :] = 255  # the right half white: class 1 of the label
        Image.fromarray(stored).save(root / "img" / f"{i}.jpg", exif=exif, quality=95)
        write_label(root / "lbl" / f"{i}.png", two_class_label(SIZE))
    return root


def test_labels_drawn_on_the_stored_pixels_of_exif_rotated_photos(tmp_path):
    root = _phone_photos(tmp_path / "seg")
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    (problem, _) = ds.preflight()
    assert problem.detail == (
        f"16 x 12, its image '{root / 'img' / '0.jpg'}' 12 x 16 after its EXIF orientation 6"
    )
    assert "EXIF orientation 6 (a quarter turn)" in problem.fix
    assert "{reader}.apply_exif_orientation=false" in problem.fix
    assert "would stretch it" in problem.fix  # resizing is not the advice
    message = _message(ds)
    assert "set ++dataset.source.apply_exif_orientation=false" in message
    with pytest.raises(DatasetError, match="apply_exif_orientation=false"):
        ds.load(0)
    # the option the message names reads the stored pixels, on which the labels fit
    stored = SegmentationFolder(
        root / "img", root / "lbl", num_classes=2, apply_exif_orientation=False
    )
    assert stored.preflight() == []
    image, label = stored.load(0)
    assert image.size == SIZE and label.shape == (SIZE[1], SIZE[0])
    white = np.asarray(image).mean(-1) > 128
    assert (white == (label == 1)).mean() > 0.95


def test_seg_folders_reads_every_split_as_stored_with_one_key(tmp_path):
    from mic.datasets import UnlabeledImageFolder
    from mic.experiment import build_datasets, load_config
    from tests.helpers import seg_folder_overrides

    src, tgt, tst = (_phone_photos(tmp_path / s) for s in ("src", "tgt", "tst"))
    overrides = seg_folder_overrides(tmp_path, source=src, target=tgt, test=tst)
    problem = SegmentationFolder(src / "img", src / "lbl", num_classes=2).preflight()[0]
    cfg = load_config(overrides)  # its source reader reads dataset.apply_exif_orientation
    message, _ = format_problems([problem], "dataset.source.dataset", config=cfg.dataset)
    assert "set dataset.apply_exif_orientation=false" in message, message
    data = build_datasets(load_config([*overrides, "dataset.apply_exif_orientation=false"]))
    assert data["source"].apply_exif_orientation is False  # rare class sampling off: the reader
    assert data["test"].apply_exif_orientation is False
    target = data["target"]
    assert isinstance(target, UnlabeledImageFolder) and not target.apply_exif_orientation
    stored = UnlabeledImageFolder(tgt / "img", apply_exif_orientation=False)[0]
    assert stored.size == SIZE and UnlabeledImageFolder(tgt / "img")[0].size == SIZE[::-1]


def test_a_transposed_label_without_exif_is_not_advised_to_be_resized(tmp_path):
    root = seg_tree(tmp_path / "seg", n=1)
    write_label(root / "lbl" / "0.png", two_class_label((SIZE[1], SIZE[0])))  # 12 x 16
    (problem,) = SegmentationFolder(root / "img", root / "lbl", num_classes=2).preflight()
    assert "width and height swapped" in problem.fix
    assert "no EXIF orientation" in problem.fix
    assert "apply_exif_orientation" not in problem.fix


@pytest.mark.parametrize("moved", ["img", "lbl"])
def test_images_and_labels_in_differently_nested_folders_are_pointed_out(tmp_path, moved):
    root = seg_tree(tmp_path / "seg", n=3)  # img/0.png ... with lbl/0.png ...
    (root / moved / "cityA").mkdir()
    for path in sorted((root / moved).glob("*.png")):
        path.rename(root / moved / "cityA" / path.name)  # one side in a sub-folder only
    with collecting_problems():
        ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    message = _message(ds)
    nested, flat = "cityA/0.png", "0.png"
    image = root / "img" / (nested if moved == "img" else flat)
    looked = root / "lbl" / (nested if moved == "img" else flat)
    there = root / "lbl" / (flat if moved == "img" else nested)
    assert f"(for '{image}': '{looked}')" in message
    assert f"but '{there}' is there: lay the image and label folders out alike" in message


# ------------------------------------------------------------------ RGB labels
def test_grey_labels_saved_as_rgb_are_read_and_colour_ones_refused(tmp_path):
    root = seg_tree(tmp_path / "seg", n=2, labels=False)
    label = two_class_label(SIZE, right=2)
    label[0, 0] = 1
    for i in range(2):
        (root / "lbl").mkdir(exist_ok=True)
        Image.fromarray(np.stack([label] * 3, -1)).save(root / "lbl" / f"{i}.png")
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3)
    assert ds.preflight() == []
    assert np.array_equal(ds.load(1)[1], label)
    # a colour rendering among them is refused where it is read, naming the file
    colour = np.stack([label * 100, label, label], -1).astype(np.uint8)
    Image.fromarray(colour).save(root / "lbl" / "1.png")
    with pytest.raises(DatasetError, match="three channels differ"):
        ds.load(1)
    (problem,) = ds.preflight()
    assert problem.file.endswith("1.png") and "three channels differ" in problem.detail
    # colour renderings: every one is named by the check, whatever the value sample read
    (problem,) = ds.preflight(label_sample=0)
    assert problem.kind == "label files of the wrong mode" and problem.file.endswith("1.png")
    assert "three channels differ" in problem.detail and "colour rendering" in problem.fix
    Image.fromarray(colour).save(root / "lbl" / "0.png")
    problems = ds.preflight()
    assert [p.kind for p in problems] == ["label files of the wrong mode"] * 2
    # a grey one among them is read, not named with them
    Image.fromarray(np.stack([label] * 3, -1)).save(root / "lbl" / "0.png")
    assert [Path(p.file).name for p in ds.preflight(label_sample=0)] == ["1.png"]


def test_grey_labels_with_an_opaque_alpha_are_read_and_transparent_ones_refused(tmp_path):
    root = seg_tree(tmp_path / "seg", n=2, labels=False)
    (root / "lbl").mkdir()
    label = two_class_label(SIZE, right=2)
    label[0, 0] = 1
    opaque = np.full_like(label, 255)
    Image.fromarray(np.stack([label] * 3 + [opaque], -1), "RGBA").save(root / "lbl" / "0.png")
    Image.fromarray(np.stack([label, opaque], -1), "LA").save(root / "lbl" / "1.png")
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=3)
    assert ds.preflight() == []
    assert np.array_equal(ds.load(0)[1], label) and np.array_equal(ds.load(1)[1], label)
    see_through = opaque.copy()
    see_through[:2, :3] = 0  # an unlabelled corner left transparent
    Image.fromarray(np.stack([label, see_through], -1), "LA").save(root / "lbl" / "1.png")
    with pytest.raises(DatasetError, match="LA image with 6 transparent pixels"):
        ds.load(1)
    (problem,) = ds.preflight()
    assert problem.file.endswith("1.png") and "store ignored pixels as 255" in problem.detail
    # every label so: each is named by its mode, with what it holds
    Image.fromarray(np.stack([label] * 3 + [see_through], -1)).save(root / "lbl" / "0.png")
    problems = ds.preflight(label_sample=0)
    assert [p.kind for p in problems] == ["label files of the wrong mode"] * 2
    assert problems[0].detail.startswith("RGBA, not one of L, P, I, ")
    assert problems[0].detail.endswith(
        ": an RGBA image with 6 transparent pixels (transparency is not read as ignore: store "
        "ignored pixels as 255)"
    )


# ------------------------------------------------------------ the seg_folders key
def test_the_label_suffix_hint_names_the_seg_folders_key(tmp_path):
    root = seg_tree(tmp_path / "seg", n=2)
    for path in (root / "lbl").glob("*.png"):
        path.rename(path.with_name(path.stem + "_mask.png"))
    with collecting_problems():
        ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    message = _message(ds, "test")
    assert "set ++dataset.test.label_suffix=_mask.png to read them" in message
    # the seg_folders config's test reader reads dataset.label_suffix: that key is named
    cfg = load_config(["experiment=streets", "dataset=seg_folders", "dataset.num_classes=2"])
    with pytest.raises(DatasetError) as info:
        check_datasets({"test": ds}, None, cfg.dataset)
    alone = "this split's alone: ++dataset.test.label_suffix=_mask.png"
    said = f"set dataset.label_suffix=_mask.png (read by source, target and test; {alone}) to"
    assert said in str(info.value)
    fixed = SegmentationFolder(root / "img", root / "lbl", num_classes=2, label_suffix="_mask.png")
    assert fixed.preflight() == []


def test_a_split_root_given_as_the_target_image_folder_is_refused(tmp_path):
    """``dataset.target_images=<root>`` where <root> holds ``img/`` and ``lbl/``: the label
    masks would be trained on as target images."""
    from mic.datasets import UnlabeledImageFolder

    root = seg_tree(tmp_path / "tst")
    with pytest.raises(DatasetError) as info:
        UnlabeledImageFolder(root, label_suffix=".png")
    message = str(info.value)
    assert message.startswith("Label folders among the unlabelled images (1): ")
    assert (
        f"'{root / 'lbl'}' (its 4 files share their names with the images of '{root / 'img'}'"
        in message
    )
    assert "and have one channel: they are those images' labels" in message
    assert f"root='{root / 'img'}' (an argument of UnlabeledImageFolder)" in message
    with collecting_problems():  # as mic-train builds it: kept for the data check
        (problem,) = UnlabeledImageFolder(root).preflight()
    assert not problem.warning and problem.file == str(root / "lbl")
    assert UnlabeledImageFolder(root / "img").preflight() == []  # the image folder itself


def test_one_channel_images_named_as_colour_ones_beside_them_are_a_warning(tmp_path):
    from mic.datasets import UnlabeledImageFolder

    for i in range(3):  # masks in a folder not named as label folders
        write_png(tmp_path / "photos" / f"{i}.jpg", size=SIZE)
        write_label(tmp_path / "seg" / f"{i}.png", two_class_label(SIZE))
    (problem,) = UnlabeledImageFolder(tmp_path).preflight()
    assert problem.warning and problem.file == str(tmp_path / "seg")
    assert problem.kind == "folders of one-channel images named as the colour images beside them"


def test_class_folders_of_the_same_file_names_are_no_warning(tmp_path):
    """Office-31 names the images of every class folder frame_0001.jpg, frame_0002.jpg, ...;
    two cameras of the same scenes name theirs alike: data, not labels."""
    from mic.datasets import UnlabeledImageFolder
    from tests.helpers import class_folders

    class_folders(tmp_path / "classes", ["back_pack", "bike", "mug"])
    for camera in ("left", "right"):
        write_png(tmp_path / "stereo" / camera / "0001.png", size=SIZE)
    for folder in ("classes", "stereo"):
        ds = UnlabeledImageFolder(tmp_path / folder)
        assert ds.found_problems == [] and ds.preflight() == []
    # a class named as label folders, of photographs: a warning, not an error
    class_folders(tmp_path / "classes", ["mask"])
    (problem,) = UnlabeledImageFolder(tmp_path / "classes").preflight()
    assert problem.warning and problem.file == str(tmp_path / "classes" / "mask")
    assert problem.detail.startswith("2 files, e.g. '0.png', named as those of '")


def test_images_under_a_label_folder_name_are_a_warning(tmp_path):
    """The Cityscapes root given as the target: gtFine's files are named otherwise than the
    images, but its name says what they are."""
    from mic.datasets import UnlabeledImageFolder

    write_png(tmp_path / "leftImg8bit" / "train" / "a" / "a_0_leftImg8bit.png", size=SIZE)
    write_label(tmp_path / "gtFine" / "train" / "a" / "a_0_gtFine_labelIds.png", [[0, 1]])
    (problem,) = UnlabeledImageFolder(tmp_path).preflight()
    assert problem.warning and problem.file == str(tmp_path / "gtFine")
    assert problem.detail == "1 images taken from it"


def test_a_class_folder_with_grey_jpeg_photos_named_as_a_label_folder_is_a_warning(tmp_path):
    """A face-mask data set's classes mask/ and nomask/ of the same file names, a grey photo
    among them: JPEG (which no label mask survives) and one grey file make no label folder."""
    from PIL import Image

    from mic.datasets import UnlabeledImageFolder

    for name, mode in (("0001.jpg", "L"), ("0002.jpg", "RGB")):
        for folder in ("mask", "nomask"):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.new(mode if folder == "mask" else "RGB", SIZE, 90).save(tmp_path / folder / name)
    ds = UnlabeledImageFolder(tmp_path)  # not refused
    (problem,) = ds.preflight()
    assert problem.warning and problem.file == str(tmp_path / "mask")
    # grey PNG masks in every shared file of a label folder are refused, as before
    for i in range(2):
        write_png(tmp_path / "split" / "img" / f"{i}.png", size=SIZE)
        write_label(tmp_path / "split" / "lbl" / f"{i}.png", two_class_label(SIZE))
    with pytest.raises(DatasetError, match="Label folders among the unlabelled images"):
        UnlabeledImageFolder(tmp_path / "split")


def test_one_image_saved_in_two_formats_is_warned_of_as_two_samples_of_one_label(tmp_path, caplog):
    import logging

    root = seg_tree(tmp_path / "src")
    write_png(root / "img" / "0.jpg", value=90, size=SIZE)  # a copy of 0.png, as JPEG
    ds = SegmentationFolder(root / "img", root / "lbl", num_classes=2)
    assert len(ds) == 5  # both are samples
    with caplog.at_level(logging.WARNING):
        check_datasets({"source": ds})
    assert "Label files that several images share (1)" in caplog.text
    assert "the label of '0.jpg', '0.png'" in caplog.text


def test_a_number_given_where_the_transform_goes_is_named(tmp_path):
    """SegmentationFolder(images, labels, 2): the 2 was taken as the transform, the class
    count left at its default, and the first sample failed with "'int' object is not
    callable"."""
    from mic import ConfigError
    from mic.datasets import ImageFolder, UnlabeledImageFolder
    from tests.helpers import class_folders

    root = seg_tree(tmp_path / "seg", n=2)
    said = r"SegmentationFolder: transform must be callable .* got int 2 \(the class count is num"
    with pytest.raises(ConfigError, match=said):
        SegmentationFolder(root / "img", root / "lbl", 2)
    with pytest.raises(ConfigError, match=r"UnlabeledImageFolder: transform must be callable"):
        UnlabeledImageFolder(root / "img", "resize")
    with pytest.raises(ConfigError, match=r"ImageFolder: transform must be callable"):
        ImageFolder(class_folders(tmp_path / "cls", ["a", "b"]), 3)


def test_an_image_folder_that_holds_the_label_folder_is_named(tmp_path):
    """src/img and src/lbl with src as the image folder: the labels were counted as images and
    the message asked to lay the folders out alike."""
    root = seg_tree(tmp_path / "src", n=2)  # root/img, root/lbl
    with pytest.raises(DatasetError) as info:
        SegmentationFolder(root, root / "lbl", num_classes=2)
    message = str(info.value)
    assert f"the label folder '{root / 'lbl'}' lies inside the image folder '{root}'" in message
    assert "its 2 files (e.g. '" in message
    assert f"as the image folder ('{root / 'img'}'), whose images' labels are in" in message
    assert len(SegmentationFolder(root / "img", root / "lbl", num_classes=2)) == 2
    # layouts whose labels are named otherwise keep their own hints: another ending ...
    other = tmp_path / "other"
    write_png(other / "imgs" / "a.png", size=(8, 8))
    write_label(other / "labels" / "imgs" / "a_mask.png", two_class_label((8, 8)))
    with collecting_problems():
        ds = SegmentationFolder(other, other / "labels", num_classes=2)
    assert "label_suffix=_mask.png" in _message(ds)
    # ... and images in several folders, labels flat (one folder named: the others dropped)
    flat = tmp_path / "flat"
    for city, name in (("city1", "a"), ("city2", "b")):
        write_png(flat / city / f"{name}.png", size=(8, 8))
        write_label(flat / "labels" / f"{name}.png", two_class_label((8, 8)))
    with collecting_problems():
        ds = SegmentationFolder(flat, flat / "labels", num_classes=2)
    assert "lies inside the image folder" not in _message(ds)


def test_the_seg_folders_class_names_reach_source_and_test_readers(tmp_path):
    """One key names the classes of the per-class IoU table (two ++ keys of the readers
    before, found only in the code)."""
    from hydra.utils import instantiate

    root = seg_tree(tmp_path / "seg", n=2)
    paths = {"images": root / "img", "labels": root / "lbl"}
    cfg = load_config(
        ["experiment=streets", "dataset=seg_folders", "dataset.num_classes=3",
         "dataset.classes=[sky,road,car]", f"dataset.target_images={root / 'img'}",
         *(f"dataset.{s}_{k}={p}" for s in ("source", "test") for k, p in paths.items())]
    )  # fmt: skip
    for reader in (cfg.dataset.source.dataset, cfg.dataset.test):
        assert list(instantiate(reader).classes) == ["sky", "road", "car"]


def test_a_detail_shared_by_every_file_of_a_kind_is_said_once():
    """Twelve label files of ids outside the mapping repeated its long parenthesis twelve
    times (about 2 KB); files of details of their own keep them."""
    from mic.datasets.preflight import Problem

    said = "ids [10, 20, 30] outside the training-id mapping (known ids: 0..2)"
    alike = [Problem("label files with ids outside the mapping", f"{i}.png", said, "Fix.")
             for i in range(12)]  # fmt: skip
    message, listed = format_problems(alike, "SegmentationFolder", budget=5)
    assert message.count(said) == 1 and listed == 5
    assert "'0.png', '1.png', '2.png', '3.png', '4.png' and 7 more, each: ids [10" in message
    own = [Problem("k", f"{i}.png", f"ids [{i}]", "Fix.") for i in range(2)]
    assert "'0.png' (ids [0]); '1.png' (ids [1])." in format_problems(own, "x")[0]
