#!/usr/bin/env bash
# Install pytorch-adapt, the peer library that benchmarks/peers.py runs side by side with mic
# (and that tests/test_peers.py and tests/test_validators.py check mic against), into the
# active Python environment.
#
#   bash scripts/install_peers.sh
#
# pytorch-adapt 0.0.83 pins torchmetrics==0.9.3, which predates the torch mic needs; the parts
# mic uses (its hooks, losses and validators) run with mic's torchmetrics, so pytorch-adapt is
# installed without its pins, and pytorch-metric-learning at pytorch-adapt's pin, 1.6.3 (its
# 2.x releases removed a name pytorch-adapt's validators import). What they import beyond that
# (numpy, torch, torchvision, torchmetrics, scikit-learn, tqdm) is in mic's own dependencies.
set -euo pipefail

PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip install --no-deps "pytorch-adapt==0.0.83" "pytorch-metric-learning==1.6.3"
"$PYTHON" -c "import pytorch_adapt.hooks, pytorch_adapt.validators"
