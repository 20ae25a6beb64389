"""Scrapy commands of this project (``COMMANDS_MODULE``): ``crawl`` checks the pubmed spider's input first."""
