"""Code shared by `classification` and `segmentation`: pretrained weights, training callbacks and
schedules, mixed precision, bootstrap confidence intervals and plotting. It imports no data code."""
