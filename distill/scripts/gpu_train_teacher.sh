#!/usr/bin/env bash
# One device call (GPU host, see shared/gpu-env/README.md): train the teacher with a time limit, export it in fp16,
# evaluate it and pack everything into $OUT (parts of 15 MB).
#   run(command=". .gpu/install.sh && CFG=configs/teacher_procworld.json TL=490 bash distill/scripts/gpu_train_teacher.sh", carry=[".gpu"])
#   continue from the committed weights (fresh optimiser and schedule; see the teacher card):
#   INIT=distill/dd3g_distill/teachers/procworld-mv64 CFG=configs/teacher_procworld_continue.json TL=400 GUIDANCE=1 ...
#   the wider teacher (configs/teacher_procworld_wide.json, unet_width 2: 12M parameters; run 2026-11-27, see the card):
#   CFG=configs/teacher_procworld_wide.json RUN=runs/teacher_wide TEACHER_OUT=distill/dd3g_distill/teachers/procworld-mv64-wide \
#     TL=490 GUIDANCE=1 PACK_CKPT=0 ...     (then the same again on the warm machine: it resumes from RUN)
# Join on this machine: cat pack.tar.part_* | tar xf -
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/sdk:$PWD/distill:$PWD/export:$PYTHONPATH
T=${TEACHER_OUT:-distill/dd3g_distill/teachers/procworld-mv64}  # where the fp16 EMA teacher is exported
R=${RUN:-runs/teacher}
RES=${RES:-/tmp/res}  # results folder, and NAME their file names: two runs can share a machine (gpu_train_teacher_pair.sh)
NAME=${NAME:-teacher_procworld}
mkdir -p $T $RES $OUT
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>&1 | tee -a $OUT/run.log
python3 -m dd3g_distill.train_teacher --config ${CFG:-configs/teacher_procworld.json} --run $R \
  --time-limit ${TL:-430} ${INIT:+--init-from $INIT} --export $T 2>&1 | grep -v "accelerate\|^\`\`\`\|^\.$\|^$" | tr '\r' '\n' | tee -a $OUT/run.log
[[ ${EVAL:-1} == 0 ]] || python3 -m dd3g_distill.eval_teacher --teacher $T --count ${N:-64} --steps ${STEPS:-50} --guidance ${GUIDANCE:-1,2,3} --batch 64 \
  --json $RES/$NAME.json --grid $RES/$NAME.png 2>&1 | grep -v "accelerate\|^\`\`\`\|^\.$\|^$" | tee -a $OUT/run.log
cp $RES/$NAME.json $RES/$NAME.png $OUT/ 2>/dev/null
# the newest checkpoint travels too, so that a later command can resume the run; PACK_CKPT=0 leaves it out when it
# cannot fit through $OUT (8 files of 16 MiB: the wide teacher's checkpoint is ~190 MB). A later call on the same
# warm machine resumes from $RUN anyway; a later session continues with INIT= the exported teacher.
CK=$R/$(python3 -c "import json; print(json.load(open('$R/latest.json'))['dir'])")
[[ ${PACK_CKPT:-1} == 0 ]] && CK=
tar cf - $T $R/tb $R/config.json $R/latest.json $CK $RES | split -b 15M - $OUT/pack.tar.part_
ls -la $OUT | tee -a $OUT/run.log
