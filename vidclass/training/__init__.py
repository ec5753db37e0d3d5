"""Making a model: the labelled corpus and its splits, fitting, cross-validation, evaluation and reports."""
