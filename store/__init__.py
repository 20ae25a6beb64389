"""On-disk formats of the pipeline: article schema, atomic writes, Parquet store, config.

`store` imports nothing else of this project; crawler, indexer and trainer build on it.
"""

from store.schema import ARTICLE_SCHEMA, SCHEMA_VERSION, SchemaError

__all__ = ["ARTICLE_SCHEMA", "SCHEMA_VERSION", "SchemaError"]
