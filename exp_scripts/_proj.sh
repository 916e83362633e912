# shellcheck shell=bash
# exp_scripts/_proj.sh: the body the five projection scripts share ({darts,blank}-proj-sota.sh,
# sdarts-rs-proj-sota.sh, {darts,blank}-proj-201.sh). Each sources _args.sh, sets its defaults,
# METHOD (the --method flags, an array) and BENCH (sota or 201), then sources this with "$@".

case "$BENCH" in
    sota)
        parse_args "dataset seed gpu space resume_epoch resume_expid crit
                    epochs init_channels layers batch_size data experiments num_workers log_tag
                    proj_intv fast no_progress no_plots resume" -- "$@"
        add_flags epochs init_channels layers batch_size data experiments num_workers log_tag
        add_switches fast no_progress no_plots resume
        show_vars id seed dataset space resume_epoch resume_expid crit gpu
        run_door darts_pt/sota/cnn train_search.py \
            "${METHOD[@]}" \
            --search_space "$space" --dataset "$dataset" \
            --seed "$seed" --save "$id" --gpu "$gpu" \
            --resume_epoch "$resume_epoch" --resume_expid "$resume_expid" --dev proj \
            --edge_decision random \
            --proj_crit_normal "$crit" --proj_crit_reduce "$crit" --proj_crit_edge "$crit" \
            --proj_intv "$proj_intv"
        ;;
    201)
        parse_args "dataset seed gpu resume_epoch resume_expid crit
                    epochs init_channels batch_size data experiments num_workers log_tag api_path
                    proj_intv fast no_progress no_plots resume" -- "$@"
        add_flags epochs init_channels batch_size data experiments num_workers log_tag api_path
        add_switches fast no_progress no_plots resume
        show_vars id seed dataset resume_epoch resume_expid crit gpu
        run_door darts_pt/nasbench201 train_search.py \
            "${METHOD[@]}" \
            --dataset "$dataset" \
            --save "$id" --gpu "$gpu" --seed "$seed" \
            --resume_epoch "$resume_epoch" --resume_expid "$resume_expid" --dev proj \
            --edge_decision random --proj_crit "$crit" \
            --proj_intv "$proj_intv"
        ;;
    *) die "_proj.sh: BENCH must be sota or 201, got '${BENCH-}'" ;;
esac
