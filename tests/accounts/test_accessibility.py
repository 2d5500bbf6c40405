"""The accessibility statement (issue 11, point 10): the footer says « non conforme » (no
audit yet, as RGAA requires) and links to a full statement; no page here skips a heading
level, the renewal wizard included."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.lifecycle.conftest import expiring_token, make_listening_api


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.levels: list[int] = []
        self.texts: list[str] = []
        self._open: int | None = None

    def handle_starttag(self, tag, attrs):
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.levels.append(int(tag[1]))
            self.texts.append("")
            self._open = len(self.texts) - 1

    def handle_endtag(self, tag):
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self.texts[self._open] += data


def headings(page: str) -> list[tuple[int, str]]:
    parser = _Headings()
    parser.feed(page)
    return [(level, " ".join(text.split())) for level, text in zip(parser.levels, parser.texts)]


def skipped_levels(page: str) -> list[str]:
    """Headings that come more than one level below the previous one (h1 → h3)."""
    found, previous = [], 0
    for level, text in headings(page):
        if level > previous + 1:
            found.append(f"h{previous} → h{level} « {text} »")
        previous = level
    return found


def test_skipped_levels_are_detected():
    assert skipped_levels("<h1>a</h1><h3>b</h3>") == ["h1 → h3 « b »"]
    assert skipped_levels("<h1>a</h1><h2>b</h2><h3>c</h3><h2>d</h2>") == []


def test_footer_says_non_conforme_and_links_to_the_statement(app, client):
    page = client.get("/connexion").get_data(as_text=True)
    assert "partiellement conforme" not in page
    assert 'href="/accessibilite">Accessibilité : non conforme</a>' in page


def test_statement_gives_state_non_conformities_contact_and_defender(app, client):
    response = client.get("/accessibilite")
    assert response.status_code == 200  # public: no sign-in needed
    page = response.get_data(as_text=True)
    titles = [text for _level, text in headings(page)]
    for title in (
        "Déclaration d'accessibilité",
        "État de conformité",
        "Contenus non accessibles",
        "Non-conformités connues",
        "Retour d'information et contact",
        "Voies de recours",
    ):
        assert title in titles, title
    assert "<strong>non conforme</strong>" in page and "RGAA" in page
    assert "aucun audit" in page
    assert f'href="mailto:{app.config["CONTACT_EMAIL"]}' in page
    assert "Défenseur des droits" in page and "Libre réponse 71120" in page
    assert skipped_levels(page) == []


def test_legal_page_agrees_with_the_statement(app, client):
    page = client.get("/mentions-legales").get_data(as_text=True)
    assert "partiellement conforme" not in page
    assert "<strong>non conforme</strong>" in page
    assert 'href="/accessibilite"' in page
    assert skipped_levels(page) == []


def test_renewal_wizard_does_not_skip_a_heading_level(app, login_as):
    token = expiring_token(make_listening_api(), days_left=40)
    client = login_as(token.habilitation.requester)
    page = client.get(f"/jetons/{token.id}/renouvellement").get_data(as_text=True)
    levels = [level for level, _text in headings(page)]
    assert 3 in levels  # the contacts, under their step
    assert skipped_levels(page) == []
    steps = [text for level, text in headings(page) if text.startswith("Étape")]
    assert len(steps) == 5 and all(level == 2 for level, t in headings(page) if t in steps)
