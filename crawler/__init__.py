"""Scrapy project and E-utilities client that fetch PubMed into the article store."""
