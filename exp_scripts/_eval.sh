# shellcheck shell=bash
# exp_scripts/_eval.sh: the body the three evaluation scripts share (eval.sh, eval-c100.sh,
# eval-svhn.sh). Each sources _args.sh, sets its defaults, then sources this with "$@".

parse_args "dataset seed gpu arch batch_size learning_rate resume_expid resume_epoch
            epochs init_channels layers data cutout_length num_workers experiments
            fast no_progress" -- "$@"
require arch none "pass --arch NAME: a genotype name (python -m shared.genotypes list)" \
    "or a genotype .json"

add_flags epochs init_channels layers data cutout_length num_workers experiments
add_switches fast no_progress
show_vars id seed dataset gpu arch batch_size learning_rate
run_door darts_pt/sota/cnn train.py \
    --arch "$arch" \
    --dataset "$dataset" \
    --auxiliary --cutout \
    --seed "$seed" --save "$id" --gpu "$gpu" \
    --batch_size "$batch_size" --learning_rate "$learning_rate" \
    --resume_expid "$resume_expid" --resume_epoch "$resume_epoch"
