"""Members and ensembles: member SavedModels on disk, loading, the deployed forward pass, aggregation weights."""
