"""Offline demo: a bundled PubMedQA sample and the script that runs the whole pipeline on it."""
