"""The crawl's spiders; ``pubmed`` is the only one."""
