#!/usr/bin/env bash
# The released-recipe ablation at sigma = 1.0 on MNIST (docs/deviations.md): cear_tf's recipe,
# then one released choice at a time, then all of them; RandSmooth, CEAR(RW) and CEAR-(RW)
# certified for each. Shared settings: flags/mnist_ablation/ (20 epochs, N = 10,000); each
# variant adds its flags below. Every stage resumes (members, weights, log rows), so rerun it
# after an interruption. Rows a variant does not change are not recomputed: the table takes
# them from the base variant.
#   nohup nice -n 10 scripts/mnist_ablation.sh > mnist_ablation.log 2>&1 &
# Usage: scripts/mnist_ablation.sh [VARIANT ...]   (default: all, in the order below)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
data=(--data_dir="${DATA_DIR:-../shared/datasets}")
stages=flags/mnist_ablation
experiment=$stages/sigma100.cfg
root=${ABLATION_ROOT:-results/mnist_ablation_sigma100}
lenet_teacher=${ABLATION_TEACHER:-results/mnist_teacher}   # the paper-protocol teacher
# Extra flags for every stage (tests shrink the run with them; list them in --undefok).
read -r -a stage_extra <<<"${ABLATION_EXTRA:-}"

cnn="--arch=released_mnist_cnn --nonormalize"
released_sgd="--learning_rate=0.1 --momentum=0.8 --lr_schedule=constant --clipnorm=0 --weight_decay=0"
released_adam="--optimizer=adam --learning_rate=0.001 --lr_schedule=constant --clipnorm=0 --weight_decay=0 --batch_size=256"

# Per variant: flags for the teacher ("-" = the LeNet-5 teacher), the students (both
# ensembles), the CEAR students only, the Gaussian network, and certification / weights;
# "base" in a row's slot means that row is the base variant's.
declare -A teacher students cear gaussian certify
variants=(base train_clip certify_clip fixed_copy network student_loss optimizer vga_rule all)
teacher[base]=-;           students[base]="";                     cear[base]="";                       gaussian[base]="";                          certify[base]=""
teacher[train_clip]=-;     students[train_clip]="--train_clip";   cear[train_clip]="";                 gaussian[train_clip]="--train_clip";        certify[train_clip]=""
teacher[certify_clip]=-;   students[certify_clip]=base;           cear[certify_clip]="";               gaussian[certify_clip]=base;                certify[certify_clip]="--clip"
teacher[fixed_copy]=-;     students[fixed_copy]="--fixed_noisy_copy"; cear[fixed_copy]="";             gaussian[fixed_copy]="--fixed_noisy_copy";  certify[fixed_copy]=""
teacher[network]="$cnn";   students[network]="$cnn";              cear[network]="";                    gaussian[network]="$cnn";                   certify[network]=""
teacher[student_loss]=-;   students[student_loss]="--student_loss=released_mnist"; cear[student_loss]=""; gaussian[student_loss]=base;         certify[student_loss]=""
teacher[optimizer]=-;      students[optimizer]="$released_adam";  cear[optimizer]="";                  gaussian[optimizer]=base;                   certify[optimizer]=""
teacher[vga_rule]=-;       students[vga_rule]=base;               cear[vga_rule]="--vga_rule=released_mnist"; gaussian[vga_rule]=base;             certify[vga_rule]=""
teacher[all]="$cnn $released_sgd"
students[all]="$cnn $released_adam --student_loss=released_mnist --train_clip --fixed_noisy_copy"
cear[all]="--vga_rule=released_mnist"
gaussian[all]="$cnn $released_sgd --train_clip --fixed_noisy_copy"
certify[all]="--clip"

# The experiment file's keys pass the stages that do not read them (as in run_all.sh).
run() {
  echo "== $(date +%H:%M:%S) $*" >&2
  nice -n 10 "$python" -m "$@" --undefok=dataset,data_dir,sigma,output_dir,validation_size,split_seed,seed \
    "${stage_extra[@]}"
}

# The images: first the authors' 67, then the rest of every 20th up to index 4000 (200 in all);
# ABLATION_IMAGE_PASSES overrides them (passes separated by ';').
IFS=';' read -r -a image_passes <<<"${ABLATION_IMAGE_PASSES:---start=2160 --max=3500;--max=4000}"

one_variant() {
  local v=$1 out=$root/$1 t
  if [[ ${teacher[$v]} == - ]]; then
    t=$lenet_teacher
  else
    t=$out/teacher
    # shellcheck disable=SC2086
    run cear_tf.train --flagfile=$stages/teacher.cfg --flagfile=$experiment ${teacher[$v]} \
      --model_dir="$t" --verbose=2 "${data[@]}"
  fi
  local cear_dir=$out/cear minus_dir=$out/cear_minus rs_dir=$out/randsmooth
  if [[ ${students[$v]} == base ]]; then
    minus_dir=$root/base/cear_minus
    [[ -z ${cear[$v]} ]] && cear_dir=$root/base/cear
  fi
  if [[ ${gaussian[$v]} == base ]]; then rs_dir=$root/base/randsmooth; fi
  local student_flags=${students[$v]}
  [[ $student_flags == base ]] && student_flags=""
  if [[ $cear_dir == "$out/cear" ]]; then
    # shellcheck disable=SC2086
    run cear_tf.train --flagfile=$stages/students.cfg --flagfile=$experiment $student_flags \
      ${cear[$v]} --vga --teacher_dir="$t" --model_dir="$cear_dir" --verbose=2 "${data[@]}"
  fi
  if [[ $minus_dir == "$out/cear_minus" ]]; then
    # shellcheck disable=SC2086
    run cear_tf.train --flagfile=$stages/students.cfg --flagfile=$experiment $student_flags \
      --novga --teacher_dir="$t" --model_dir="$minus_dir" --verbose=2 "${data[@]}"
  fi
  if [[ $rs_dir == "$out/randsmooth" ]]; then
    # shellcheck disable=SC2086
    run cear_tf.train --flagfile=$stages/gaussian.cfg --flagfile=$experiment ${gaussian[$v]} \
      --model_dir="$rs_dir" --verbose=2 "${data[@]}"
  fi
  # RW weights for the ensembles this variant certifies, beside its logs.
  local -a rows=()
  local changed_rows=0
  [[ $cear_dir == "$out/cear" || -n ${certify[$v]} ]] && rows+=("cear_rw:$cear_dir:rw")
  [[ $minus_dir == "$out/cear_minus" || -n ${certify[$v]} ]] && rows+=("cear_minus_rw:$minus_dir:rw")
  [[ $rs_dir == "$out/randsmooth" || -n ${certify[$v]} ]] && rows+=("randsmooth:$rs_dir:single")
  for row in "${rows[@]}"; do
    IFS=: read -r name models aggregation <<<"$row"
    local rw_flag=()
    if [[ $aggregation == rw ]]; then
      local weights=$out/weights/${name%_rw}.json
      # shellcheck disable=SC2086
      run cear_tf.weights --flagfile=$stages/weights_rw.cfg --flagfile=$experiment \
        ${certify[$v]} --models="$models" --weights_out="$weights" "${data[@]}"
      rw_flag=(--rw_weights="$weights")
    fi
    for pass in "${image_passes[@]}"; do
      # shellcheck disable=SC2086
      run cear_tf.certify --flagfile=$stages/certify.cfg --flagfile=$experiment ${certify[$v]} \
        --models="$models" --aggregation="$aggregation" "${rw_flag[@]}" $pass \
        --outfile="$out/certify/$name.tsv" "${data[@]}"
    done
    changed_rows=$((changed_rows + 1))
  done
  echo "== $(date +%H:%M:%S) variant $v: $changed_rows rows certified" >&2
}

todo=("$@")
[[ ${#todo[@]} -eq 0 ]] && todo=("${variants[@]}")
for v in "${todo[@]}"; do
  if [[ -z ${teacher[$v]+x} ]]; then
    echo "mnist_ablation.sh: unknown variant '$v' (known: ${variants[*]})" >&2
    exit 2
  fi
done
for v in "${todo[@]}"; do one_variant "$v"; done
