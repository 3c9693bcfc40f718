#!/usr/bin/env bash
# One device call (about 9 minutes on one GPU): timings alone on the card first, then the
# SSM recall runs side by side (small models leave the GPU mostly idle, so several processes
# share it). Every result lands in benchmarks/results/ (NAME_TAG.gpu.*); the logs and the
# new result files are packed into $OUT/device.tgz (the device tool returns at most 8 files).
# Usage (repo root, on the device machine): bash benchmarks/device_run.sh [SECONDS [lr1e-3|bcconv]]
# lr1e-3: the follow-up call, Mamba-1 MQAR at lr 1e-3 at d_model 128 and at N 32.
# bcconv: whether mimetic_ssm's default should be conv="bc" on Mamba-2, at full length:
#   default vs conv=False (the default) vs conv="bc", 10 paired seeds, copying and MQAR,
#   including settings where mimetic init does not saturate (fewer steps, d_model 128, N 32).
#   The CPU-sized run (400-500 steps, results/ssm_recall_m2bc_cpu.md) answered no: conv="bc"
#   trained worse on copying and MQAR; this mode repeats it at the GPU runs' lengths.
set -u
budget=${1:-530}
mode=${2:-all}
out=${OUT:-/tmp/device_out}
mkdir -p "$out/logs"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}
b=benchmarks
t0=$(date +%s)
left() { echo $((budget - ($(date +%s) - t0))); }
pack() { find $b/results -type f -newermt "@$t0" -exec cp {} "$out/logs/" \; ; tar czf "$out/device.tgz" -C "$out" logs; }
# an SSM recall run in the background, stopped after $T seconds (results are written per configuration)
ssm() { local tag=$1; shift
  timeout "$T" $py $b/ssm_recall.py --watchdog 0 --no-timing --seeds 3 --tag "$tag" "$@" > "$out/logs/$tag.log" 2>&1 & }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/logs/gpu.txt" 2>&1
$py -c "import jax, flax; print(jax.__version__, flax.__version__, jax.devices())" >> "$out/logs/gpu.txt" 2>&1

if [ "$mode" = lr1e-3 ]; then
  T=$(( budget - 15 ))
  ssm m1mqar_d128_lr1e-3 --versions 1 --tasks mqar --mqar-states 16 --d-model 128 --mqar-steps 4000 --lr 1e-3 --inits default mimetic mimetic+conv
  ssm m1mqar_n32_lr1e-3 --versions 1 --tasks mqar --mqar-states 32 --mqar-steps 4000 --lr 1e-3 --inits default mimetic transition
  wait; pack; exit 0
fi

if [ "$mode" = bcconv ]; then
  T=$(( budget - 15 ))
  inits="default mimetic-noconv mimetic+bcconv"
  ssm m2bc_copy --versions 2 --tasks copying --copy-lengths 16 32 --seeds 10 --inits $inits
  ssm m2bc_mqar --versions 2 --tasks mqar --mqar-states 8 32 --seeds 10 --inits $inits
  ssm m2bc_mqar_short --versions 2 --tasks mqar --mqar-states 8 --mqar-steps 500 --seeds 10 --inits $inits
  ssm m2bc_mqar_d128 --versions 2 --tasks mqar --mqar-states 16 --d-model 128 --seeds 10 --inits $inits
  wait; pack; exit 0
fi

# 1. timings, one at a time, nothing else on the card
timeout 70 $py $b/conv_init_cost.py --watchdog 0 > "$out/logs/conv_init_cost.log" 2>&1
# ViT-B: default, fast and exact interleaved (exact: 3 rounds)
timeout 150 $py $b/init_cost.py --watchdog 0 --models vit --methods fast,exact > "$out/logs/init_cost.log" 2>&1

# 2. SSM recall runs, side by side
T=$(( $(left) - 25 ))
echo "training budget ${T}s" >> "$out/logs/gpu.txt"
ssm sweep_m1copy --versions 1 --tasks copying --copy-lengths 32 --sweep
ssm sweep_m2mqar --versions 2 --tasks mqar --mqar-states 8 --sweep
ssm sweep_m1mqar --versions 1 --tasks mqar --mqar-states 16 --sweep --inits default mimetic alog-6:-2 alog-4:-1 delta0.1 alpha1-beta1 mimetic+conv
ssm m1mqar_d128 --versions 1 --tasks mqar --mqar-states 16 32 --d-model 128 --mqar-steps 4000 --inits default mimetic mimetic+conv transition
ssm m1mqar_lr1e-3 --versions 1 --tasks mqar --mqar-states 16 --mqar-steps 4000 --lr 1e-3 --inits default mimetic mimetic+conv transition
ssm m1mqar_lr1e-2 --versions 1 --tasks mqar --mqar-states 16 --mqar-steps 4000 --lr 1e-2 --inits default mimetic mimetic+conv transition
wait
nvidia-smi >> "$out/logs/gpu.txt" 2>&1
pack
ls -la "$out" "$out/logs"
