#!/usr/bin/env bash
# The lab profile and the GPU benchmarks on a lent device machine (PyTorch with CUDA, no DVC), in calls on
# one warm machine, each within a device call's 10 minutes:
#
#   bash bench/gpu_session.sh stage1  # prepare, vqgan, tokens (H200: 326 s)
#   bash bench/gpu_session.sh rest    # train, the sweep and headline, fid_reference, evaluate (H200: 255 s),
#                                     # then bench.stage2 block by block at the stage's batch 128, profiled;
#                                     # results under $OUT
#   bash bench/gpu_session.sh prefill # after rest, on the same machine: the known tokens of the final decode
#                                     # encoded from prefilled holes (tokens.decode_prefill=$PREFILL, default ns),
#                                     # the sweep and evaluate again, each KID paired with rest's run; rest's
#                                     # tokens and KIDs are put back after
#
# Needs the cats64 images in .data/cats64 (cp -r ../shared/data/cats64 .data/: 33 MB). FID on the
# device needs pytorch-fid's Inception weights (default_1.pt, 87 MB; a call carries 64 MiB at most), in
# two parts: head -c 30000000 default_1.pt > .data/fid_part_00; tail -c +30000001 default_1.pt >
# .data/fid_part_01; carry .data/cats64 and .data/fid_part_00 in the first call, .data/fid_part_01 in
# the second. Without them `evaluate` is skipped. Extra settings: OVERRIDES="-S vqgan.steps=1200";
# BENCH=0 skips the benchmark.
set -euo pipefail
set -f  # OVERRIDES is split on spaces but not globbed: -S sweep.T=[4] is not a file pattern
cd "$(dirname "$0")/.."
phase=${1:?usage: bash bench/gpu_session.sh stage1|rest|prefill}
[[ $phase == stage1 || $phase == rest || $phase == prefill ]] ||
    { echo "gpu_session: unknown phase '$phase' (stage1, rest or prefill)" >&2; exit 2; }
out=${OUT:-gpu_session_out}
mkdir -p "$out"
settings=(-S profile=lab -S data.source=.data/cats64 ${OVERRIDES:-})
run_all=(python3 -m commands.run_all "${settings[@]}")

fid_weights() {  # the Inception weights from their two carried parts; false where a part is missing
    [ -f .data/fid_part_00 ] && [ -f .data/fid_part_01 ] || return 1
    [ -f .data/default_1.pt ] || cat .data/fid_part_00 .data/fid_part_01 > .data/default_1.pt
    export MASKGIT_FID_WEIGHTS=$PWD/.data/default_1.pt
}

case "$phase" in
stage1)
    [ -d .data/cats64 ] || { echo "gpu_session: .data/cats64 is missing (carry it)" >&2; exit 2; }
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
        python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$out/gpu.txt"
    fi
    "${run_all[@]}" --skip train inpaint fid_reference evaluate 2>&1 | tee "$out/stage1.log"
    cp reports/timings.json "$out/timings_stage1.json"
    # reports/ is tracked, so the next call's copy of the working tree overwrites this folder
    tar czf "$out/reports_vqgan.tar.gz" reports/vqgan
    ;;
rest)
    skip=(prepare vqgan tokens)
    if ! fid_weights; then
        echo "gpu_session: no .data/fid_part_00 and _01: evaluate skipped" >&2
        skip+=(fid_reference evaluate)
    fi
    "${run_all[@]}" --skip "${skip[@]}" 2>&1 | tee "$out/rest.log"
    cp reports/timings.json "$out/timings_rest.json"
    # The figures a report needs, small: metrics, tables, curves, the pictures in one archive, packed before the
    # benchmarks so that a call cut short by the device budget still returns them.
    # results/leave_one_out.npz: every scored set's per-image KID values, so a later run can be paired with this one
    tar czf "$out/reports.tar.gz" reports models/vqgan/architecture.json models/vqgan/config.yaml \
        $(ls results/leave_one_out.npz 2> /dev/null || true)
    if [ "${BENCH:-1}" = 1 ]; then  # BENCH=0 leaves the device time to the pipeline
        # the stage's own mode and batch, profiled: where stage 2's step goes at 22-24 % MFU, and whether
        # torch.compile kept our attention (attention_rewrites 0)
        python3 -m bench.stage2 --compile --batch 128 --profile > "$out/bench_stage2_regional_b128.json"
    fi
    ;;
prefill)
    fill=${PREFILL:-ns}
    fid_weights || { echo "gpu_session: prefill needs .data/fid_part_00 and _01" >&2; exit 2; }
    [ -f results/leave_one_out.npz ] && [ -f models/transformer/transformer.pt ] ||
        { echo "gpu_session: prefill compares with rest's run: run rest first on this machine" >&2; exit 2; }
    grey=.data/prefill_grey  # rest's test tokens and KIDs, put back however this phase ends
    rm -rf $grey && mkdir -p $grey && cp -r data/tokens results/leave_one_out.npz $grey/
    trap 'rm -rf data/tokens && cp -r $grey/tokens data/tokens && cp $grey/leave_one_out.npz results/' EXIT
    "${run_all[@]}" -S tokens.decode_prefill="$fill" --skip prepare vqgan train fid_reference evaluate 2>&1 |
        tee "$out/prefill_$fill.log"
    python3 -m stages.evaluate "${settings[@]}" -S tokens.decode_prefill="$fill" --against $grey/leave_one_out.npz 2>&1 |
        tee -a "$out/prefill_$fill.log"
    tar czf "$out/reports_prefill_$fill.tar.gz" reports results/leave_one_out.npz
    ;;
esac
