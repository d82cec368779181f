#!/usr/bin/env bash
# Install detectron2 0.6 as pure Python into the active Python environment, for CPU work
# (tests, CI, small runs): mic's detectron2 backend then trains and predicts on the CPU.
#
#   pip install -e ".[detectron2]"           # what detectron2 needs from PyPI
#   bash scripts/install_detectron2_cpu.sh   # detectron2 itself (needs torch installed)
#
# detectron2 publishes no wheels. PyPI holds its 0.6 release, without its C++ / CUDA sources,
# as the sdist `pb1-detectron2`; this script downloads it (checked against its sha256),
# removes its C++ extension build, patches the few places that import the extension or use
# names that current Pillow / setuptools / numpy removed, and pip-installs the result without
# build isolation as the distribution `detectron2 0.6+cpu`. Faster R-CNN needs no extension:
# detectron2 takes ROIAlign and NMS from torchvision. Deformable convolution and rotated boxes,
# which do, raise an error when used. On a GPU machine, build detectron2 from its sources
# instead (docs/detection.md, "detectron2 on a GPU").
#
# Idempotent: does nothing when detectron2 is already importable (a compiled build is never
# replaced); --force reinstalls the CPU build.
set -euo pipefail

SDIST="pb1-detectron2==0.6"
SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PYTHON="${PYTHON:-python}"

if [[ "${1:-}" != "--force" ]] && "$PYTHON" - 2>/dev/null <<'PY'
import importlib.util
import sys

try:
    import detectron2.modeling
except ImportError:
    sys.exit(1)
compiled = importlib.util.find_spec("detectron2._C") is not None
kind = "compiled, with its C++/CUDA ops" if compiled else "pure Python, without its C++ ops"
print(f"detectron2 {detectron2.__version__} is already installed ({kind}); nothing to do")
PY
then
    exit 0
fi

"$PYTHON" -c "import torch" || {
    echo "install torch first (detectron2 builds against it)" >&2
    exit 1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# pip >= 26 refuses to download a PyPI sdist whose metadata names a URL dependency (the sdist's
# optional 'all' extra names panopticapi by URL), so the download uses pip 25.3, run from its
# wheel; the hash pins the file.
"$PYTHON" -m pip download --quiet --no-deps -d "$tmp/pip" "pip==25.3"
echo "$SDIST --hash=sha256:$SHA256" >"$tmp/requirements.txt"
"$PYTHON" "$tmp/pip/pip-25.3-py3-none-any.whl/pip" download --quiet --no-deps \
    --no-build-isolation -d "$tmp" -r "$tmp/requirements.txt"
tar -xzf "$tmp/pb1-detectron2-0.6.tar.gz" -C "$tmp"
src="$tmp/pb1-detectron2-0.6"

"$PYTHON" - "$src" <<'PY'
"""Patch the sdist: a setup.py without the C++ extension, the extension's imports made
optional, and names that current Pillow, setuptools and numpy removed replaced."""

import re
import shutil
import sys
from pathlib import Path

src = Path(sys.argv[1])
pkg = src / "detectron2"


def patch(path: str, old: str, new: str) -> None:
    file = pkg / path
    text = file.read_text()
    if old not in text:
        raise SystemExit(f"install_detectron2_cpu.sh: {path} has no {old!r}; a different sdist?")
    file.write_text(text.replace(old, new))


# 1. the C++ extension (its sources are not in the sdist): optional where it is imported
guarded = (
    "try:\n"
    "    from detectron2 import _C\n"
    "except ImportError:  # a build without the C++ ops (scripts/install_detectron2_cpu.sh)\n"
    "    _C = None\n"
)
for path in (
    "layers/deform_conv.py",
    "layers/rotated_boxes.py",
    "layers/roi_align_rotated.py",
    "evaluation/fast_eval_api.py",
):
    patch(path, "from detectron2 import _C\n", guarded)
# 2. Pillow 10 removed Image.LINEAR (an alias of BILINEAR), a default argument read at import
patch("data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR")
# 3. setuptools 81 removed pkg_resources: find the model zoo's configs beside the module
patch("model_zoo/model_zoo.py", "import pkg_resources\n", "")
patch(
    "model_zoo/model_zoo.py",
    'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
    'os.path.join(os.path.dirname(__file__), "configs", config_path)',
)
# 4. numpy 1.24 removed the aliases np.int, np.float, np.object (evaluation and data code)
for file in pkg.rglob("*.py"):
    text = file.read_text()
    new = re.sub(r"\bnp\.(int|float|object)\b(?!_)", r"\1", text)
    if new != text:
        file.write_text(new)

# 5. setup.py without the extension build; requirements without black (LazyConfig.save's
# formatting), future and pydot (caffe2 export) and matplotlib (the Visualizer), which
# nothing mic uses imports; the configs of the model zoo as package data
(src / "setup.py").write_text(
    '''from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6+cpu",
    description="detectron2 0.6 (from the pb1-detectron2 sdist) without its C++/CUDA ops",
    url="https://github.com/facebookresearch/detectron2",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.7",
    install_requires=[
        "Pillow>=7.1",
        "pycocotools>=2.0.2",
        "termcolor>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
    ],
)
'''
)
for leftover in src.glob("*.egg-info"):
    shutil.rmtree(leftover)
PY

# setuptools >= 70.1 builds wheels without the separate 'wheel' package
"$PYTHON" - <<'PY' || "$PYTHON" -m pip install --quiet "setuptools>=70.1"
import sys

import setuptools

sys.exit(tuple(int(v) for v in setuptools.__version__.split(".")[:2]) < (70, 1))
PY
"$PYTHON" -m pip install --quiet --no-build-isolation "$src"

"$PYTHON" - <<'PY'
import detectron2
from detectron2 import model_zoo
from detectron2.modeling import build_model  # noqa: F401

model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
print(f"detectron2 {detectron2.__version__} installed (pure Python, without its C++ ops)")
PY
