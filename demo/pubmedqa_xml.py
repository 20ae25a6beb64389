"""Turn PubMedQA records ({PMID: {QUESTION, CONTEXTS, LABELS, MESHES, YEAR, ...}}) into a
PubMed efetch-style ``PubmedArticleSet`` file, so the local E-utilities server can serve
the demo corpus the way NCBI would. The abstract is the labelled CONTEXTS (PubMedQA
leaves the conclusion out: it is the long answer); the title is the question, which
PubMedQA derived from the article's title.

Usage: python demo/pubmedqa_xml.py SAMPLE.json OUT.xml [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lxml import etree


def build(records: dict[str, dict[str, object]]) -> bytes:
    root = etree.Element("PubmedArticleSet")
    for pmid, rec in records.items():
        article = etree.SubElement(root, "PubmedArticle")
        citation = etree.SubElement(article, "MedlineCitation", Status="MEDLINE", Owner="NLM")
        etree.SubElement(citation, "PMID", Version="1").text = str(int(pmid))
        art = etree.SubElement(citation, "Article", PubModel="Print")
        journal = etree.SubElement(art, "Journal")
        issue = etree.SubElement(journal, "JournalIssue", CitedMedium="Print")
        etree.SubElement(etree.SubElement(issue, "PubDate"), "Year").text = str(rec.get("YEAR", ""))
        etree.SubElement(journal, "Title").text = "PubMedQA sample"
        etree.SubElement(art, "ArticleTitle").text = str(rec["QUESTION"])
        abstract = etree.SubElement(art, "Abstract")
        labels = list(rec.get("LABELS") or [])  # type: ignore[call-overload]
        for i, text in enumerate(rec["CONTEXTS"]):  # type: ignore[attr-defined]
            node = etree.SubElement(abstract, "AbstractText")
            if i < len(labels) and labels[i]:
                node.set("Label", str(labels[i]))
            node.text = str(text)
        etree.SubElement(art, "Language").text = "eng"
        meshes = rec.get("MESHES") or []
        if meshes:
            mesh_list = etree.SubElement(citation, "MeshHeadingList")
            for term in meshes:  # type: ignore[attr-defined]
                etree.SubElement(etree.SubElement(mesh_list, "MeshHeading"), "DescriptorName").text = str(term)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sample", type=Path, help="PubMedQA JSON (ori_pqal.json form)")
    parser.add_argument("out", type=Path, help="XML file to write")
    parser.add_argument("--limit", type=int, default=None, help="keep only the first N records")
    args = parser.parse_args(argv)
    records = json.loads(args.sample.read_text(encoding="utf-8"))
    if args.limit is not None:
        records = dict(list(records.items())[: args.limit])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(build(records))
    print(f"wrote {len(records)} articles to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
