"""Pictures of the pipeline: histogram reports of a stream and drawings of packed sequences."""
