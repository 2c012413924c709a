"""ui_page.py: reads the reading worklist page (triage/ui) as headless
Chromium left it (--dump-dom), for test_node_ui.sh and test_orthanc_ui.sh.

parse(path) -> Page with
  rows    [(study_instance_uid, priority_level, orthanc_id or None)] in page order
  badges  the priority names shown, in order
  warns   the visible text of each warning marker (shown on the row, not
          only on hover)
  links   the hrefs of each row's links, one list per row
  status  the header's status line
"""
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.badges, self.warns, self.links = [], [], [], []
        self.status, self._in = "", None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "study" in a.get("class", "").split():
            self.rows.append((a.get("data-uid"), int(a.get("data-level")),
                              a.get("data-orthanc-id") or None))
            self.links.append([])
        if tag == "a" and self.rows:
            self.links[-1].append(a.get("href", ""))
        if tag == "span" and a.get("class") == "badge":
            self._in = "badge"
        if tag in ("span", "div") and a.get("class") == "warn":
            self.warns.append("")
            self._in = "warn"
        if tag == "div" and a.get("id") == "status":
            self._in = "status"

    def handle_data(self, data):
        if self._in == "badge":
            self.badges.append(data.strip())
        elif self._in == "status":
            self.status += data
        elif self._in == "warn":
            self.warns[-1] += data

    def handle_endtag(self, tag):
        if tag in ("span", "div"):
            self._in = None


def parse(path):
    p = Page()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p
