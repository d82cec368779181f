"""The data check before training (``preflight``) on a GTA5-sized tree: seconds to build the
reader, and to check every image and label header plus a sample of label values.

Writes a synthetic GTA5 tree (``images/<n>.png`` RGB, ``labels/<n>.png`` palette PNGs of
Cityscapes ids; small, since headers are what the check reads) once, then times, each
``--repeats`` times, ``GTA5(root)`` (listing and pairing) and ``GTA5(root).preflight()``; and,
for reference, the same header pass over the first 25,000 files alone.

    python -m benchmarks.preflight                       # 24,966 pairs under /tmp
    python -m benchmarks.preflight --pairs 2000 --root /data/tmp/gta_synthetic

The results file records the command, the machine and the seconds (the file system cache is
warm after the tree is written, as on a second run over a local disk).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "preflight.md"


def write_tree(root: Path, pairs: int, size: tuple[int, int] = (64, 36)) -> bool:
    """``pairs`` GTA5-style image / label files; whether they were written (not when the
    tree is already there). A tree of other pairs is refused (it would be timed instead)."""
    images, labels = root / "images", root / "labels"
    there = len(os.listdir(images)) if images.is_dir() else 0
    if there == pairs:
        return False
    if there:
        raise SystemExit(
            f"--root {root} holds a tree of {there} pairs, not {pairs}: give another --root, "
            "or remove it"
        )
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    palette = [v for i in range(256) for v in (i, 255 - i, i // 2)]
    for i in range(pairs):
        name = f"{i + 1:05d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / name)
        ids = np.full((h, w), 7, np.uint8)  # road
        ids[: h // 3] = 23  # sky
        ids[:, : w // 4] = 26 if i % 2 else 11  # car or building
        label = Image.fromarray(ids, "L").convert("P")
        label.putpalette(palette)
        label.save(labels / name)
    return True


def full_size_label(path: Path) -> Path:
    """One label at GTA5's 1914 x 1052 (palette PNG of Cityscapes ids, regions and noise)."""
    rng = np.random.default_rng(0)
    ids = np.full((1052, 1914), 7, np.uint8)
    ids[:300] = 23
    ids[500:800, 200:900] = 26
    ids[:, 1500:] = 11
    ids[rng.random(ids.shape) < 0.01] = 17
    label = Image.fromarray(ids, "L").convert("P")
    label.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    label.save(path)
    return path


def _seconds(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--pairs", type=int, default=24_966, help="GTA5 has 24,966 frames")
    parser.add_argument("--root", type=Path, default=Path("/tmp/mic_preflight_gta"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args()
    for key in ("pairs", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    for key in ("root", "out"):
        path = getattr(args, key)
        below = next((p for p in (path, *path.parents) if p.exists()), None)
        if below is not None and not below.is_dir() and (key == "root" or below != path):
            parser.error(f"--{key} {path}: '{below}' is a file, not a folder")
    if args.out.is_dir():  # (its write failed after the whole run)
        parser.error(f"--out {args.out} is a folder: give the results file (e.g. {RESULTS.name})")

    from mic.datasets.preflight import LABEL_SAMPLE, check_images
    from mic.datasets.segmentation import GTA5
    from mic.datasets.segmentation.labels import CITYSCAPES_IDS
    from mic.datasets.segmentation.readers import read_label

    start = time.perf_counter()
    if not write_tree(args.root, args.pairs):
        written = "written by an earlier call"
    else:
        written = f"written in {time.perf_counter() - start:.0f} s"
    build = _seconds(lambda: GTA5(args.root), args.repeats)
    dataset = GTA5(args.root)
    problems: list = []
    check = _seconds(lambda: problems.extend(dataset.preflight()), args.repeats)
    errors = [p for p in problems if not p.warning]  # (classes absent from the tree: a warning)
    assert not errors, errors[:3]
    files = sorted((args.root / "images").iterdir()) + sorted((args.root / "labels").iterdir())
    first = files[:25_000]
    headers = _seconds(lambda: check_images(first, "files"), args.repeats)
    big = full_size_label(args.root / "full_size_label.png")
    decode = _seconds(lambda: CITYSCAPES_IDS(read_label(big)), 20)

    def cell(values: list[float]) -> str:
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.2f}{spread}"

    command = "python -m benchmarks.preflight" + (
        f" --pairs {args.pairs}" if args.pairs != 24_966 else ""
    )
    command += f" --root {args.root}" if args.root != Path("/tmp/mic_preflight_gta") else ""
    command += f" --repeats {args.repeats}" if args.repeats != 5 else ""
    lines = [
        "# The data check before training on a GTA5-sized tree",
        "",
        f"Command: `{command}` (tree {written}; {args.repeats} repeats, mean ± std; the file "
        "system cache warm, as on a second run over a local disk).",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, one process.",
        "",
        "| what | files | seconds |",
        "|---|---|---|",
        f"| `GTA5(root)`: list the images, pair each with its label | {2 * args.pairs:,} "
        f"| {cell(build)} |",
        f"| `GTA5(root).preflight()`: every image and label header (size, mode), pairs, and "
        f"the values of 100 label files | {2 * args.pairs:,} | {cell(check)} |",
        f"| the header pass alone over the first 25,000 files | {len(first):,} | {cell(headers)} |",
        "",
        f"Per file: {1e6 * statistics.mean(check) / (2 * args.pairs):.0f} µs for the whole "
        "check. The images and labels here are small PNGs (64 x 36): a PNG's size and mode "
        "are in its first chunk, read without the pixels, whatever the image size. The "
        f"{LABEL_SAMPLE} sampled label files are decoded: one palette label at GTA5's "
        f"1914 x 1052 decodes and maps in {1e3 * statistics.mean(decode):.0f} ms here, so at "
        f"full size the sample adds about {LABEL_SAMPLE * statistics.mean(decode):.1f} s "
        "(rare class sampling's statistics, which read every label file once and are then "
        "cached, replace the sample).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
