"""Per-frame features: the pretrained nets, content statistics, the pipeline record, extraction and the features files."""
