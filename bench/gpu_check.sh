#!/usr/bin/env bash
# GPU check of the cnn stage, for a machine with an NVIDIA GPU.
#
#   bash bench/gpu_check.sh            # from the repository root
#
# 1. the CUDA execution provider of ONNX Runtime runs the shipped model
#    (fails if ONNX Runtime silently falls back to the CPU);
# 2. its probabilities and embeddings match the CPU provider within 1e-4
#    on 256 real MiraBest cutouts;
# 3. images/s at batch 256, CUDA and CPU (model only, inputs already
#    preprocessed, and the whole stage including preprocessing).
# Then runs bench/gpu_check_som.sh if it is present.
#
# Needs: python with the package installed (onnxruntime-gpu; version 1.31
# wants the CUDA 13 and cuDNN 9 libraries on the library path, e.g. from the
# nvidia-*-cu13 wheels); data in $SURVEY_CLASSIFIER_DATA or ../shared/data.
# Exits non-zero on any failure. Not yet run on a GPU; on a machine without
# one it reports ONNX Runtime's fallback to the CPU and fails, and
# GPU_CHECK_PROVIDER=CPUExecutionProvider runs the rest of it as a dry run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"

"$PYTHON" - <<'PY'
import os, sys, time, logging
from pathlib import Path
import numpy as np
import onnxruntime as ort

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from survey_classifier.cnn.data import load_images
from survey_classifier.io.fits import read_cutout
from survey_classifier.stages.cnn import CNNStage

BATCH = 256
data = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", Path.cwd().parent / "shared" / "data"))
files = sorted((data / "mirabest" / "fits").glob("*.fits"))[:BATCH]
if len(files) < BATCH:
    sys.exit(f"FAIL: need {BATCH} MiraBest FITS files under {data}/mirabest/fits, found {len(files)}")
print("onnxruntime", ort.__version__, "available providers:", ort.get_available_providers())

PROVIDER = os.environ.get("GPU_CHECK_PROVIDER", "CUDAExecutionProvider")  # CPU: dry run of the logic
gpu = CNNStage(embedding=True, batch_size=BATCH, providers=[PROVIDER])
cpu = CNNStage(embedding=True, batch_size=BATCH, providers=["CPUExecutionProvider"])
try:
    gpu.setup()
except Exception as exc:
    sys.exit(f"FAIL: the CUDA provider could not load the model: {exc}")
cpu.setup()
print("model", gpu.model_ref, "- GPU session runs on", gpu.session_.get_providers())
if gpu.session_.get_providers()[0] != PROVIDER:
    sys.exit("FAIL: ONNX Runtime fell back to " + gpu.session_.get_providers()[0])

images = load_images(files, gpu.preprocess_config_)
p_gpu, e_gpu = gpu.predict(images)
p_cpu, e_cpu = cpu.predict(images)
dp = float(np.max(np.abs(p_gpu - p_cpu)))
de = float(np.max(np.abs(e_gpu - e_cpu)) / max(1.0, float(np.max(np.abs(e_cpu)))))
print(f"max |dp| CUDA vs CPU: {dp:.2e}   max relative |d embedding|: {de:.2e}")
ok = dp <= 1e-4 and de <= 1e-4

def rate(stage, repeats):
    stage.predict(images)
    start = time.perf_counter()
    for _ in range(repeats):
        stage.predict(images)
    return repeats * len(images) / (time.perf_counter() - start)

print(f"model only, batch {BATCH}: CUDA {rate(gpu, 50):,.0f} images/s   CPU {rate(cpu, 5):,.0f} images/s")
cutouts = [read_cutout(path) for path in files]
start = time.perf_counter()
results = gpu.process(cutouts)
print(f"whole stage (preprocess + CUDA), batch {BATCH}: {len(results) / (time.perf_counter() - start):,.0f} images/s")
print("PASS" if ok else "FAIL: CUDA and CPU outputs differ by more than 1e-4")
sys.exit(0 if ok else 1)
PY

if [ -f bench/gpu_check_som.sh ]; then
    echo "--- bench/gpu_check_som.sh"
    bash bench/gpu_check_som.sh
fi
