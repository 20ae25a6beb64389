"""Sharded FAISS index over the article store: chunk, embed, shard, publish, search.

The public API is `indexer.search.open_index` (search) and `indexer.build.rebuild`
(incremental rebuild); `indexer rebuild|search|verify` is the command line.
"""
