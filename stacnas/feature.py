"""StacNAS' feature clustering — the released ``feature.py`` (Li et al., "StacNAS", arXiv
1909.11926, sec. 3: operations whose outputs correlate split α's mass, so they are grouped).

    cd stacnas
    python search.py --name ops --stage search1 --ops all --num_cells 14 --alpha_share
    python feature.py --name ops --stage search1 --batch_size 64

Reads the stage-1 supernet of ``{save_dir}/search1`` (its last checkpoint), runs the first
``--total_samples`` training images (10,000 as released) through it and, on two edges per cell
(node 0 <- c_{k-2}, the last node <- the node before it), streams each candidate's output
features (``stacnas.feature_stats``). Written to ``{save_dir}/search1/features``: the op x op
correlation matrix per edge (``corr_{key}.txt``, CSV, and ``corr_{key}.png``, a heat-map),
K-means clusters of the ops' mean features for k = 2..min(#ops, 4) with a 2-D PCA scatter
(``dist_{key}_group{k}.png``) and ``clusters.json`` (``stacnas.feature_plots``).

A stage 1 over the group representatives (the default) has only 4 ops to cluster; the paper's
grouping evidence needs a stage 1 over all 7 DARTS ops (``search.py --ops all``).

Differences from the release: the images go through the test transform (no random crop or
flip), so the statistics do not depend on augmentation draws; K-means is seeded (``--seed``);
features are streamed in memory instead of pickled to disk for every edge and batch.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.errors import UserError, cli_entry  # noqa: E402
from stacnas.config import base_parser, parse_flags, stage_dir  # noqa: E402

FEATURES = "features"


def build_parser():
    p = base_parser("feature.py", stage="search1")
    p.add_argument("--total_samples", type=int, default=10000,
                   help="training images to run (the first ones)")
    return p


def load_stage1(folder: str, device):
    """The stage-1 supernet of ``folder`` (last checkpoint) and its search config."""
    from shared.checkpoint import load_checkpoint
    from shared.data import IN_CHANNELS, NUM_CLASSES
    from shared.models.search_cnn import Network
    from shared.spaces import CellSpace

    path = os.path.join(folder, "checkpoint.pth.tar")
    if not os.path.isfile(path):
        raise UserError(f"no stage-1 checkpoint {path}: run search.py --stage search1 first "
                        "with the same --name/--save_dir")
    state = load_checkpoint(path, map_location="cpu")
    cfg = state.get("config", {})
    door = cfg.get("extra", {}).get("door")
    if (door is not None and door != "stacnas/search.py") or not cfg.get("space_data"):
        raise UserError(f"{path} is not a StacNAS stage-1 checkpoint (written by {door})")
    space = CellSpace.from_dict(cfg["space_data"])
    model = Network(cfg["init_channels"], NUM_CLASSES[cfg["dataset"]], cfg["layers"], space,
                    in_channels=IN_CHANNELS[cfg["dataset"]])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), cfg, int(state["epoch"])


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args, _ = parse_flags(build_parser(), argv)
    from shared.distributed import refuse_more_processes

    refuse_more_processes("feature analysis")  # one process: N would each do all of it
    folder = stage_dir(args.save_dir, "search1")
    from shared.cli.run_folder import holder

    if holder(folder) is not None:
        raise UserError(f"{folder} is in use by process {holder(folder)} (stage 1 is still "
                        "running); analyse it when it has ended")
    from shared.runtime import choose_device, seed_everything

    device = choose_device(args.gpu)
    seed_everything(args.seed)
    model, cfg, epoch = load_stage1(folder, device)
    if cfg["dataset"] != args.dataset:
        raise UserError(f"stage 1 searched on {cfg['dataset']}, not --dataset {args.dataset}")
    from torch.utils.data import DataLoader, Subset

    from shared import data as D
    from stacnas.feature_plots import analyse
    from stacnas.feature_stats import collect_features

    data = D.get_dataset(args.dataset, args.data_dir, train=True,
                         transform=D.eval_transform(args.dataset))
    n = min(args.total_samples, len(data))
    loader = DataLoader(Subset(data, range(n)), args.batch_size, shuffle=False,
                        num_workers=args.num_workers)
    print(f"stage 1 of {folder} after epoch {epoch}; {n} training images")
    stats = collect_features(model, loader, max_samples=n, device=device)
    out_dir = os.path.join(folder, FEATURES)
    os.makedirs(out_dir, exist_ok=True)
    summary = analyse(stats, None, out_dir, seed=args.seed)
    for key, entry in summary["edges"].items():
        print(f"{key}: {', '.join(entry['op_names'])} -> k=2 {entry['groups']['2']}")
    print(f"features in {os.path.abspath(out_dir)}")


if __name__ == "__main__":
    main()
