# shellcheck shell=bash
# exp_scripts/_supernet.sh: the body the five supernet scripts share ({darts,blank}-sota.sh,
# sdarts-rs-sota.sh, {darts,blank}-201.sh). Each sources _args.sh, sets its defaults, METHOD
# (the --method flags, an array) and BENCH (sota: the DARTS space / S1-S4; 201: NAS-Bench-201),
# then sources this with "$@".
# Every supernet script also takes Λ-DARTS' regulariser (a Λ supernet for the projection
# scripts): --corr_regularization corr|signcorr --lambda_ X --epsilon_0 X --lambda_cells
# normal|all --fresh_noise 1, passed to train_search.py only when given.

LAMBDA_FLAGS="corr_regularization lambda_ epsilon_0 lambda_cells"
LAMBDA_NAMES="$LAMBDA_FLAGS fresh_noise"

case "$BENCH" in
    sota)
        parse_args "dataset seed gpu space
                    epochs init_channels layers batch_size data experiments num_workers
                    ckpt_interval expid_tag fast no_progress no_plots resume
                    $LAMBDA_NAMES" -- "$@"
        add_flags epochs init_channels layers batch_size data experiments num_workers \
            ckpt_interval expid_tag $LAMBDA_FLAGS
        add_switches fast no_progress no_plots resume fresh_noise
        show_vars id seed dataset space gpu
        run_door darts_pt/sota/cnn train_search.py \
            "${METHOD[@]}" \
            --search_space "$space" --dataset "$dataset" \
            --seed "$seed" --save "$id" --gpu "$gpu"
        ;;
    201)
        parse_args "dataset seed gpu
                    epochs init_channels batch_size data experiments num_workers ckpt_interval
                    expid_tag api_path fast no_progress no_plots resume $LAMBDA_NAMES" -- "$@"
        add_flags epochs init_channels batch_size data experiments num_workers ckpt_interval \
            expid_tag api_path $LAMBDA_FLAGS
        add_switches fast no_progress no_plots resume fresh_noise
        show_vars id seed dataset gpu
        run_door darts_pt/nasbench201 train_search.py \
            "${METHOD[@]}" \
            --dataset "$dataset" \
            --save "$id" --gpu "$gpu" --seed "$seed"
        ;;
    *) die "_supernet.sh: BENCH must be sota or 201, got '${BENCH-}'" ;;
esac
