# shellcheck shell=bash
# exp_scripts/_supernet.sh: the body the five supernet scripts share ({darts,blank}-sota.sh,
# sdarts-rs-sota.sh, {darts,blank}-201.sh). Each sources _args.sh, sets its defaults, METHOD
# (the --method flags, an array) and BENCH (sota: the DARTS space / S1-S4; 201: NAS-Bench-201),
# then sources this with "$@".

case "$BENCH" in
    sota)
        parse_args "dataset seed gpu space
                    epochs init_channels layers batch_size data experiments num_workers
                    ckpt_interval expid_tag fast no_progress resume" -- "$@"
        add_flags epochs init_channels layers batch_size data experiments num_workers \
            ckpt_interval expid_tag
        add_switches fast no_progress resume
        show_vars id seed dataset space gpu
        run_door darts_pt/sota/cnn train_search.py \
            "${METHOD[@]}" \
            --search_space "$space" --dataset "$dataset" \
            --seed "$seed" --save "$id" --gpu "$gpu"
        ;;
    201)
        parse_args "dataset seed gpu
                    epochs init_channels batch_size data experiments num_workers ckpt_interval
                    expid_tag api_path fast no_progress resume" -- "$@"
        add_flags epochs init_channels batch_size data experiments num_workers ckpt_interval \
            expid_tag api_path
        add_switches fast no_progress resume
        show_vars id seed dataset gpu
        run_door darts_pt/nasbench201 train_search.py \
            "${METHOD[@]}" \
            --dataset "$dataset" \
            --save "$id" --gpu "$gpu" --seed "$seed"
        ;;
    *) die "_supernet.sh: BENCH must be sota or 201, got '${BENCH-}'" ;;
esac
