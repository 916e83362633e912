"""StacNAS (Li et al., "StacNAS: Towards Stable and Consistent Differentiable Neural
Architecture Search", arXiv 1909.11926; github.com/susan0199/StacNAS): a two-stage grouped
search, operation groups first, then the operation inside each edge's group."""
