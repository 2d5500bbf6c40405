"""Accessibility and layout checks run on every page a browser test visits.

axe-core comes from npm (node_modules/axe-core, installed by `make setup` from the lockfile;
nothing is downloaded at run time) and is evaluated through Playwright, which the page's
Content-Security-Policy does not block (the CSP stays as strict as in production).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (320, 1280)
HEIGHT = 720

# The structure of a page (tags, classes, roles, ARIA attributes, ids, form state), without
# its text: two visits of the same page with other data are audited once per session.
_FINGERPRINT = """() => {
  const parts = [location.pathname.replace(/[0-9]+/g, "N")];
  for (const el of document.body.querySelectorAll("*")) {
    let s = el.tagName + "." + el.className;
    for (const a of el.attributes) {
      if (a.name.startsWith("aria-") || a.name === "role" || a.name === "type") s += "|" + a.name;
    }
    parts.push(s);
  }
  return parts.join("\\n");
}"""

_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const over = (el) => {
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.right > width + 1 && getComputedStyle(el).position !== "fixed";
  };
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (over(el) && !(el.parentElement && over(el.parentElement))) {
      wide.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + "." + el.className
                + " (" + Math.round(el.getBoundingClientRect().right) + " px)");
    }
  }
  if (!wide.length && document.documentElement.scrollWidth > width) {
    // Text wider than its box (a long word) or a pseudo-element: name the innermost culprit.
    for (const el of document.body.querySelectorAll("*")) {
      if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === "visible"
          && ![...el.children].some((c) => c.scrollWidth > c.clientWidth + 1)) {
        wide.push(el.tagName.toLowerCase() + "." + el.className + " (contenu de "
                  + el.scrollWidth + " px dans " + el.clientWidth + " px)");
      }
    }
  }
  return {scroll: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5)};
}"""


# The innermost elements whose removal makes the page fit: where to look.
_CULPRITS = """() => {
  const W = document.documentElement.clientWidth; const out = [];
  const walk = (el) => {
    const old = el.style.display; el.style.display = "none";
    const fits = document.documentElement.scrollWidth <= W; el.style.display = old;
    if (!fits) return false;
    let deeper = false;
    for (const child of el.children) { if (walk(child)) deeper = true; }
    if (!deeper) out.push(el.outerHTML.slice(0, 200));
    return true;
  };
  walk(document.body);
  return out.slice(0, 3);
}"""

_RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " — " + n.failureSummary),
  }));
}"""


@lru_cache(maxsize=1)
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


@dataclass
class Auditor:
    """Audits the current document of each page it watches when that document is new."""

    seen: set[str] = field(default_factory=set)
    pages: int = 0
    failures: list[str] = field(default_factory=list)

    def audit(self, page) -> None:
        page.wait_for_load_state("load")
        if page.url.startswith(("about:", "data:")):
            return
        content_type = page.evaluate("document.contentType")
        if content_type != "text/html":
            return
        key = hashlib.sha256(page.evaluate(_FINGERPRINT).encode()).hexdigest()
        if key in self.seen:
            return
        self.seen.add(key)
        self.pages += 1
        size = page.viewport_size or {"width": WIDTHS[-1], "height": HEIGHT}
        where = re.sub(r"^https?://[^/]+", "", page.url)
        try:
            # The last width is the usual window's: axe runs there, and often no resize is
            # needed to restore the page's own size.
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": size["height"]})
                overflow = page.evaluate(_OVERFLOW)
                if overflow["scroll"] > overflow["width"]:
                    self.failures.append(
                        f"{where} : plus large que la fenêtre à {width} px "
                        f"({overflow['scroll']} px) : {', '.join(overflow['wide'])}; "
                        f"la page tient si l'on masque : {page.evaluate(_CULPRITS)}"
                    )
            if not page.evaluate("typeof window.axe !== 'undefined'"):
                page.evaluate(_axe_source())
            for violation in page.evaluate(_RUN_AXE):
                nodes = "\n    ".join(violation["nodes"])
                self.failures.append(
                    f"{where} : axe {violation['id']} ({violation['impact']}) "
                    f"{violation['help']}\n    {nodes}"
                )
        finally:
            if page.viewport_size != size:
                page.set_viewport_size(size)

    def check(self) -> None:
        failures, self.failures = self.failures, []
        assert not failures, "Accessibilité ou mise en page :\n" + "\n".join(failures)


class AuditedPage:
    """A Playwright page whose every new document is audited before the test touches the
    page again (and at the end of the test): navigation is followed through the ``load``
    event, and the audit itself runs in the test's own flow, never in an event handler."""

    def __init__(self, page, auditor: Auditor):
        object.__setattr__(self, "_page", page)
        object.__setattr__(self, "_auditor", auditor)
        object.__setattr__(self, "_pending", [])
        # Every document loaded, in order (the journey budgets count them).
        object.__setattr__(self, "visited", [])
        page.on("load", self._loaded)

    def _loaded(self, page) -> None:
        # An event handler: no call into Playwright here, only bookkeeping.
        self._pending.append(True)
        self.visited.append(re.sub(r"^https?://[^/]+", "", page.url))

    def audit_now(self) -> None:
        if self._pending:
            self._pending.clear()
            self._auditor.audit(self._page)

    def __getattr__(self, name):
        self.audit_now()
        return getattr(self._page, name)

    def __setattr__(self, name, value):
        setattr(self._page, name, value)
