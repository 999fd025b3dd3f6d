"""The pipeline's library: params, tables, validation, models and the training loop."""
