#!/usr/bin/env bash
# The whole GPU measurement campaign in one command (run from the repository root on a
# machine with one H100 / H200 and the package installed):
#
#   bash benchmarks/campaign.sh [OUT_DIR]
#
# 1. runs the correctness tests of the kernels natively on the GPU (speedups are only
#    reported for a build whose tests pass);
# 2. runs every benchmark (attention peers, joint embedding, model step, loaders) with
#    --benchmark-json;
# 3. end-to-end pre-training throughput of the official config (bf16, Triton backend);
# 4. renders docs/benchmarks-measured.md and docs/assets/*.png from the JSON.
set -euo pipefail
out=${1:-bench-results}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'the campaign needs a CUDA GPU'"
python -m pytest tests/kernels tests/test_attention_api.py tests/test_embedding_api.py tests/test_model_backends.py -q \
    | tee "$out/tests.txt"
python -m pytest benchmarks -q -s --benchmark-json="$out/results.json" | tee "$out/benchmarks.txt"
deepspeed training/pretrain.py --preset official --backend triton --ds-config zero1_bf16.json --steps 200 \
    --warmup 20 --log-every 20 --ckpt-every 0 --probe off --run-dir "$out/pretrain-official" \
    --synthetic-per-class 400 | tee "$out/pretrain.txt"
python -m benchmarks.report "$out/results.json" --out docs/benchmarks-measured.md --assets docs/assets \
    --command "bash benchmarks/campaign.sh $out"
echo "pre-training summary: $out/pretrain-official/summary.json"
