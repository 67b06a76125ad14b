"""Dataset preparation: adapters that read the published datasets into `Record`s / `Volume`s,
preprocessing, patient-wise splits, synthetic phantoms, and the `python -m data_prep` command line.

Layering: `data_prep` imports nothing from `tfrecords`, `classification`, `segmentation`,
`experiments` or `common`.
"""
