#!/usr/bin/env bash
# The lab profile and the GPU benchmarks on a lent device machine (PyTorch with CUDA, no DVC), in two
# calls on one warm machine, each within a device call's 10 minutes:
#
#   bash bench/gpu_session.sh stage1  # prepare, vqgan, tokens (run 8, H200: 326 s)
#   bash bench/gpu_session.sh rest    # train, the sweep and headline, fid_reference, evaluate, bench.prefill,
#                                     # then bench.pngs, bench.stage2 block by block at the stage's batch 128,
#                                     # profiled, and bench.run_all;
#                                     # results under $OUT (run 8: 255 s without the benchmarks)
#   bash bench/gpu_session.sh prefill # after rest, on the same machine: tokens, the sweep and evaluate again with the
#                                     # test holes prefilled (PREFILL=ns, or telea), each KID paired with rest's grey
#                                     # run, and the headline's change split by bench.context_swap; rest's tokens
#                                     # and KIDs are put back after (about 2 min on the H200, estimated from run 8)
#   LABEL=name bash bench/gpu_session.sh floor  # a stage-1 recipe (OVERRIDES) judged by its floor alone
#                                     # (bench.floor), paired with every recipe scored before it on this
#                                     # machine; a recipe trained before the weights arrive is scored by
#                                     # the next call that has them (stage 1 about 300 s on the H200)
#
# Run 8 held the H200 for 698 s in all (start, transfers and a 65 s benchmark call included) of a session's 900.
#
# Needs the cats64 images in .data/cats64 (cp -r ../shared/data/cats64 .data/: 33 MB). FID on the
# device needs pytorch-fid's Inception weights (default_1.pt, 87 MB; a call carries 64 MiB at most), in
# two parts: head -c 30000000 default_1.pt > .data/fid_part_00; tail -c +30000001 default_1.pt >
# .data/fid_part_01; carry .data/cats64 and .data/fid_part_00 in the first call, .data/fid_part_01 in
# the second. Without them `evaluate` is skipped. Extra settings: OVERRIDES="-S vqgan.steps=1200";
# BENCH=0 skips the benchmarks.
set -euo pipefail
set -f  # OVERRIDES is split on spaces but not globbed: -S sweep.T=[4] is not a file pattern
cd "$(dirname "$0")/.."
phase=${1:?usage: bash bench/gpu_session.sh stage1|rest|prefill|floor}
[[ $phase == stage1 || $phase == rest || $phase == prefill || $phase == floor ]] ||
    { echo "gpu_session: unknown phase '$phase' (stage1, rest, prefill or floor)" >&2; exit 2; }
out=${OUT:-gpu_session_out}
mkdir -p "$out"
settings=(-S profile=lab -S data.source=.data/cats64 ${OVERRIDES:-})
run_all=(python3 -m stages.run_all "${settings[@]}")

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
    # the known tokens at the lab's width: how far grey holes move them, and each prefill's oracle decode (seconds)
    fid_weights && python3 -m bench.prefill "${settings[@]}" > "$out/bench_prefill.json"
    if [ "${BENCH:-1}" = 1 ]; then  # BENCH=0 leaves the device time to the pipeline
        # the inpaint stage's PNG writes on this host's cores, one at a time against threads (seconds)
        python3 -m bench.pngs > "$out/bench_pngs.json"
        # the stage's own mode and batch, profiled: where stage 2's step goes at 22-24 % MFU (about half of it
        # is neither the matmuls nor the attention's score traffic by the README's estimate), and whether
        # torch.compile kept our attention (attention_rewrites 0). Runs 7-8 measured whole against block by
        # block at 256 and block by block at 64 already.
        python3 -m bench.stage2 --compile regional --batch 128 --profile > "$out/bench_stage2_regional_b128.json"
        # last, as the least needed: what run_all's one process saves on this host against a process per
        # stage (torch and CUDA starts), at tiny sizes
        python3 -m bench.run_all --repeat 1 > "$out/bench_run_all.json"
    fi
    ;;
prefill)
    fill=${PREFILL:-ns}
    fid_weights || { echo "gpu_session: prefill needs .data/fid_part_00 and _01" >&2; exit 2; }
    [ -f results/leave_one_out.npz ] && [ -f models/transformer/transformer.pt ] ||
        { echo "gpu_session: prefill compares with rest's run: run rest first on this machine" >&2; exit 2; }
    grey=.data/prefill_grey  # rest's test tokens and KIDs, put back however this phase ends: a second prefill
    rm -rf $grey && mkdir -p $grey/headline && cp -r data/tokens results/leave_one_out.npz $grey/  # is paired with grey too
    cp results/inpaint/headline/{tokens.npy,config.yaml} $grey/headline/  # what bench.context_swap reads of a run
    trap 'rm -rf data/tokens && cp -r $grey/tokens data/tokens && cp $grey/leave_one_out.npz results/' EXIT
    "${run_all[@]}" -S tokens.prefill="$fill" --skip prepare vqgan train fid_reference evaluate 2>&1 | tee "$out/prefill_$fill.log"
    python3 -m stages.evaluate "${settings[@]}" -S tokens.prefill="$fill" --against $grey/leave_one_out.npz 2>&1 |
        tee -a "$out/prefill_$fill.log"
    tar czf "$out/reports_prefill_$fill.tar.gz" reports results/leave_one_out.npz
    # the headline's change split in two: the fill's effect on stage 2's hole tokens, and on the decoder's context
    python3 -m bench.context_swap "${settings[@]}" $grey/headline results/inpaint/headline > "$out/context_swap_$fill.json"
    ;;
floor)
    label=${LABEL:?the floor phase needs LABEL=name for its recipe}
    set +f  # the settings are split already; the kept recipes are found by pattern
    [ -d .data/cats64 ] || { echo "gpu_session: .data/cats64 is missing (carry it)" >&2; exit 2; }
    "${run_all[@]}" --skip train inpaint fid_reference evaluate 2>&1 | tee "$out/floor_$label.log"
    kept=.data/floors/$label  # the recipe's stage 1, kept until it is scored
    rm -rf "$kept" && mkdir -p "$kept"
    cp -r models/vqgan "$kept/model" && cp -r reports/vqgan "$kept/report" && cp data/tokens/test_gt.npy "$kept/"
    if fid_weights; then
        [ -f data/fid/reference.npz ] || python3 -m stages.fid_reference "${settings[@]}"
        for kept in $(ls -dtr .data/floors/*/ | sed 's:/$::'); do  # oldest first, each against those before it
            name=$(basename "$kept")
            [ -f ".data/floors/$name.npz" ] && continue
            rm -rf models/vqgan reports/vqgan
            cp -r "$kept/model" models/vqgan && cp -r "$kept/report" reports/vqgan
            cp "$kept/test_gt.npy" data/tokens/test_gt.npy
            earlier=($(ls -tr .data/floors/*.npz 2> /dev/null || true))
            python3 -m bench.floor "${settings[@]}" --save ".data/floors/$name.npz" ${earlier[@]:+--against "${earlier[@]}"} \
                | tee "$out/floor_$name.json"
        done
        tar czf "$out/floors.tar.gz" .data/floors/*.npz
    else
        echo "gpu_session: no .data/fid_part_00 and _01: $label is kept and scored by the next floor call" >&2
    fi
    ;;
esac
