"""patchpack's Arrow shard format: schemas, atomic writer, zero-copy reader, manifest."""
