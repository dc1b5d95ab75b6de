"""PDF export of a signed report's text with Qt (QTextDocument printed to QPdfWriter). Safe to call from a
worker thread: it touches no widget."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QMarginsF
from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument


def report_document(text: str) -> QTextDocument:
    """`text` as written by dicom_node.reports.report_as_text: headings in capitals become bold; spaces and
    line breaks stay as written (pre-wrap), so columns of fields are not collapsed."""
    lines = []
    for line in text.splitlines():
        escaped = html.escape(line)
        if line.isupper() and line.strip():
            lines.append(f"<h3>{escaped}</h3>")
        else:
            lines.append(f"<p style='white-space: pre-wrap; margin: 0'>{escaped or '&nbsp;'}</p>")
    document = QTextDocument()
    document.setHtml("<html><body style='font-family: sans-serif; font-size: 11pt'>" + "".join(lines)
                     + "</body></html>")
    return document


def write_report_pdf(text: str, path: Path) -> Path:
    """The report text as an A4 PDF, written aside and renamed into place."""
    document = report_document(text)
    partial = Path(path).with_name(f".{Path(path).name}.partial")
    writer = QPdfWriter(str(partial))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(20, 20, 20, 20), QPageLayout.Unit.Millimeter))
    writer.setTitle("Radiology report")
    writer.setCreator("RadDraft")
    document.print_(writer)
    del writer  # finishes the file
    partial.replace(path)
    return Path(path)
