"""`pipeline run`: one question file through crawl, index, splits, fit and eval, resumable step by step.

It imports no stage's internals beyond plain functions (the question loaders); every stage
runs as its own command in a subprocess, the crawl as ``scrapy crawl pubmed``.
"""
