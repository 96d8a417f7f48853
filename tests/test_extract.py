"""Reading text in any encoding, and PDFs page by page."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_pdf

from semsearch.errors import ExtractError
from semsearch.readers import read_document
from semsearch.readers.document import decode_text
from semsearch.readers.pdf import read_pdf


def test_decode_utf8_bom_utf16_and_legacy() -> None:
    assert decode_text("naïve café".encode()) == ("naïve café", "utf-8")
    assert decode_text("\ufeffhello".encode("utf-8"))[0] == "hello"
    assert decode_text("hello wörld".encode("utf-16"))[0] == "hello wörld"
    text, encoding = decode_text("déjà vu, façade, œuvre".encode("cp1252"))
    assert text == "déjà vu, façade, œuvre" and encoding == "cp1252"


def test_invalid_bytes_never_raise() -> None:
    data = b"good text " * 200 + b"\xff\xfe\x80 bad" + b" more good text" * 50
    text, encoding = decode_text(data)
    assert "good text" in text and "more good text" in text
    assert "replaced" in encoding


def test_extract_text_normalizes_line_ends_and_nul(tmp_path: Path) -> None:
    doc = read_document(tmp_path / "a.md", b"# Title\r\nline\x00 two\rthree\n")
    assert doc.text == "# Title\nline two\nthree\n"
    assert doc.kind == "markdown" and doc.title == "Title"


def test_pdf_pages_are_located(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "p.pdf", ["First page about volcanoes.", "Second page about glaciers."])
    doc = read_pdf(path, path.read_bytes())
    assert doc.kind == "pdf"
    assert doc.part_at(doc.text.index("volcanoes")) == 1
    assert doc.part_at(doc.text.index("glaciers")) == 2


def test_pdf_without_text_and_broken_pdf(tmp_path: Path) -> None:
    empty = make_pdf(tmp_path / "empty.pdf", ["", ""])
    with pytest.raises(ExtractError, match="no extractable text"):
        read_pdf(empty, empty.read_bytes())
    with pytest.raises(ExtractError, match="broken PDF"):
        read_pdf(tmp_path / "bad.pdf", b"%PDF-1.4\n garbage without structure")


# Legacy Western text as editors saved it: every accented letter, quote and symbol a lone byte.
CP1252_PARAGRAPHS = {
    "french": "« À Paris, l’été dernier, nous avons visité le musée d’Orsay. Les œuvres étaient "
              "magnifiques ; l’entrée coûtait 14\xa0€ par personne. » — © Éditions Gallimard, 2019. "
              "Ça m’a rappelé mon enfance à Montréal, où j’étais élève au lycée français.\n",
    "german": "Die Größe des Gebäudes überraschte uns. „Das Frühstück kostet 12 €“, sagte die Empfangsdame "
              "freundlich. Über die Straße hinweg sahen wir das Rathaus; Öffnungszeiten: täglich außer "
              "sonntags. © 2021 Müller & Söhne GmbH – alle Rechte vorbehalten.\n",
    "spanish": "¿Dónde está la estación? ¡Qué sorpresa! El niño comió paella en la plaza mayor de Cádiz; "
               "Ángel pagó 20 € por la cena. «La vida es sueño», escribió Calderón. "
               "Año 2020 © Editorial Señor.\n",
    # Each of these holds one byte pair that is valid UTF-8 by accident: É» (U+027B), ß… (U+07C5),
    # and mojibake left over from an earlier mix-up, Ã© and Â« (é and « in UTF-8).
    "accented capital before a quote": "L’ÉTÉ» était chaud ; voilà pourquoi nous sommes allés à la mer, "
                                       "près de Sète, avec ma sœur aînée. Le café coûte 2 €.\n",
    "sharp s before an ellipsis": "Er sagte: „Ich weiß…“ und ging. Die Brücke über den Fluß war schön; "
                                  "später aßen wir Käse und Brötchen.\n",
    "mojibake e-acute": "Le cafÃ© de la gare est fermé. Hélène a réservé une table près de la fenêtre ; "
                        "l’addition était élevée.\n",
    "mojibake guillemet": "Â« Bonjour », dit-elle. Nous étions déjà arrivés à l’hôtel ; "
                          "la réception était fermée à cette heure-là.\n",
}


@pytest.mark.parametrize("text", CP1252_PARAGRAPHS.values(), ids=list(CP1252_PARAGRAPHS))
def test_cp1252_paragraphs_decode_as_cp1252(text: str) -> None:
    assert decode_text(text.encode("cp1252")) == (text, "cp1252")


DAMAGED_UTF8 = {
    "junk in a short file": "Café olé the armadillo rolls into a ball. ".encode()
                            + b"\xff\xfe\xc3\x28 bad bytes here \x80\x81 and the pangolin has scales.\n",
    "cut-off characters": "Die Größe des Gebäudes: ".encode() + b"\xe2\x80 und \xc3"
                          + " überraschte uns.\n".encode(),
    "a spliced run of junk": "“Smart quotes” — and a naïve café. ".encode() + bytes(range(0x80, 0xa0)) * 2
                             + b"\xfe\xff\xfe the end.\n",
    "one stray byte": "Señor Muñoz said ".encode() + b"\x85 hello.\n",
}


@pytest.mark.parametrize("data", DAMAGED_UTF8.values(), ids=list(DAMAGED_UTF8))
def test_damaged_utf8_with_few_valid_characters_stays_utf8(data: bytes) -> None:
    text, encoding = decode_text(data)
    assert encoding == "utf-8 (with invalid bytes replaced)"
    assert text == data.decode("utf-8", errors="replace")
    assert "Ã" not in text  # no valid character garbled as cp1252 would garble it
