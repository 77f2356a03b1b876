#!/usr/bin/env bash
# Prepared GPU check of the rotation-invariant SOM (TensorFlow implementation).
#
# Runs survey_classifier/som/gpu.py on the GPU, compares it with the numpy core
# on the CPU (same initial neurons, same image order), and reports images/s for
# mapping and training, plus the projected RGZ epoch (176,750 images of 124x124,
# hexagonal 21x21 map, 64x64 neurons, 360 rotations + flip).
#
#   bash bench/gpu_check_som.sh            # ~3-5 minutes on one H200
#   PYTHON=.venv/bin/python bash bench/gpu_check_som.sh --rgz-images 20000
#
# Needs Python with numpy, scipy, astropy and TensorFlow built with CUDA. Data come
# from $SURVEY_CLASSIFIER_DATA (default ../shared/data or ./shared/data).
# Results are printed and written to ${OUT:-.}/gpu_check_som.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -z "${SURVEY_CLASSIFIER_DATA:-}" ] && [ -d shared/data ]; then
  export SURVEY_CLASSIFIER_DATA="$PWD/shared/data"
fi
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; else echo "nvidia-smi not available"; fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" bench/gpu_check_som.py "$@"
