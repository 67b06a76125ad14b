"""COVID-19 chest CT / X-ray image classification: the model zoo (`classification.models`), data
feeding from TFRecords (`data`), two-stage training (`train`), metrics with stated definitions
(`metrics`), evaluation with validation-chosen thresholds and bootstrap CIs (`evaluate`), prediction
on one's own scans (`predict`), ensemble / MC-dropout uncertainty (`uncertainty`) and the S0
manifestation recogniser (`recogniser`). Command line: `python -m classification --help`."""
