"""Sharded TFRecords: preprocess once at write time, then read fast with `tf.data`.

- `python -m tfrecords write DATASET RAW_DIR OUT_DIR [--preprocess SPEC] [--split CSV] [--shards N]
  [--image-size N] [--encoding auto|png|raw] [--compression none|zlib|gzip]`
  (`tfrecords.writer.write_dataset`): adapter records -> `tfrecords.spec` preprocessing ->
  `tf.train.Example`s with PNG or raw-array pixels (`tfrecords.schema`) in `<split>-<i>-of-<n>.tfrecord`
  shards, one patient per shard, plus `manifest.json` (`tfrecords.manifest`).
- `tfrecords.reader.make_dataset(dir, ReadConfig(...))` (`tfrecords.read_config`): a `tf.data.Dataset` of (image, target) batches for `model.fit`;
  `tfrecords.reader.read_examples(...)`: decoded NumPy examples for evaluation.
- `tfrecords.augment`: in-graph augmentation that moves images and masks together (`AugmentConfig`).
- `tfrecords.tfds_builders`: `tensorflow_datasets` builders of every adapter, built offline.
- `tfrecords.bench`: the input-pipeline variants that `python -m experiments bench` times.
"""
