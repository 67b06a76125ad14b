"""Code shared by `classification` and `segmentation`: the models' input layers (`layers`), the
keras.applications backbone registry (`backbones`), stored image -> model input (`model_input`),
pretrained weights, training callbacks and schedules, mixed precision, bootstrap confidence
intervals and plotting. It imports no data code."""
