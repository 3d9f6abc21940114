"""GTAlign datasets (parquet and tensorflow-datasets) and the built-in offline world."""
