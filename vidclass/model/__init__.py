"""Classifying: the seed BiLSTM and the pooled linear model, checkpoints, the ensemble, the name index, the taxonomy, metrics and the timeline."""
