#!/usr/bin/env bash
# One device call, two teacher runs side by side on one GPU (the small teacher's step is launch-bound, so two
# processes share a GPU at little cost each): an experiment and its control, same data, same seeds, same steps
# budget. Each run is gpu_train_teacher.sh with its own RUN, TEACHER_OUT, results and $OUT/<name>/.
#   run(command=". .gpu/install.sh >/dev/null 2>&1; A=rays B=norays_b128 TL=300 bash distill/scripts/gpu_train_teacher_pair.sh",
#       carry=[".gpu"])      (the same again on the warm machine resumes both runs)
# Measured on an H200 (2026-11-27): the two render caches take ~120 s side by side and each run trains at ~5 steps/s
# (one run alone: ~6-9), so a call with TL=390 ran out of its 600 s in the evaluations and brought nothing back but
# the logs; TL=300 leaves room for both evaluations (~30 s each). Add EVAL=0 to skip them.
# A and B name configs/teacher_procworld_<name>.json; the exported teachers land in runs/teacher_<name>/export.
set -o pipefail
TOP=$OUT
for n in ${A:?} ${B:?}; do
  OUT=$TOP/$n CFG=configs/teacher_procworld_$n.json RUN=runs/teacher_$n TEACHER_OUT=runs/teacher_$n/export \
    RES=/tmp/res_$n NAME=teacher_$n GUIDANCE=1 PACK_CKPT=0 bash distill/scripts/gpu_train_teacher.sh \
    > /tmp/log_$n.txt 2>&1 &
done
wait
for n in $A $B; do echo "== $n"; grep -v "train teacher:\|render" /tmp/log_$n.txt | tail -25; done
