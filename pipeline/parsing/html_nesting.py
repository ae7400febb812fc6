"""HTML rebuilt with bounded nesting, in one linear pass, before the sanitizer sees it.

nh3's tree builder (html5ever) does work proportional to the depth of open elements for each
tag, and re-creates open formatting elements (<b>, <font>, ...) after each implicit close: 60k
nested <div>s (300 KB) took 7.6 s, 4,000 `<p><b id=N>x</p>` (70 KB) 23 s. A depth count on
the original text would not do, because whatever that count misreads (a quote in an attribute,
a </div> inside <style>) the real parser reads otherwise. So this module is the parser: it
tokenizes as HTML does, keeps its own stack of open elements with the common implicit closes
of HTML5 (<p> by a block, <li> by <li>, cells by cells, ...), drops start tags past max_depth,
and writes canonical, fully closed HTML. The sanitizer then parses markup that nests exactly as
this stack did. Comments, doctypes and the elements the sanitizer removes with their content
(script, style, svg, ...) are dropped here already.

Only display fidelity depends on how closely this follows HTML5; the depth bound does not, and
the sanitizer still decides what is safe.
"""

import re

VOID = frozenset("area base br col embed hr img input link meta param source track wbr keygen basefont bgsound "
                 "frame image".split())
FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
HEADINGS = frozenset("h1 h2 h3 h4 h5 h6".split())
_SCOPE = frozenset("html table td th caption applet marquee object template".split())
_BUTTON_SCOPE = _SCOPE | {"button"}
_TABLE_SCOPE = frozenset("html table template".split())
_TABLE_PARTS = frozenset("table tbody thead tfoot tr td th caption".split())
_MARKERS = frozenset("td th caption applet marquee object template".split())
SPECIAL = frozenset(
    "address applet area article aside base basefont bgsound blockquote body br button caption center col "
    "colgroup dd details dir div dl dt embed fieldset figcaption figure footer form frame frameset h1 h2 h3 h4 h5 "
    "h6 head header hgroup hr html iframe img input keygen li link listing main marquee menu meta nav noembed "
    "noframes noscript object ol p param plaintext pre script search section select source style summary table "
    "tbody td template textarea tfoot th thead title tr track ul wbr xmp".split())
_CLOSES_P = frozenset(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption figure footer header "
    "hgroup main menu nav ol p search section summary ul h1 h2 h3 h4 h5 h6 pre listing form table hr li dd dt "
    "plaintext".split())
_IGNORED = frozenset("html head body".split())
# Raw text: everything up to the matching end tag is text, not markup (the sanitizer drops it).
_RAW_TEXT = frozenset("script style xmp iframe noembed noframes noscript textarea title".split())
# Dropped by the sanitizer with everything inside (its clean_content_tags): dropped here already.
_SKIPPED = frozenset("template object applet svg math select frameset".split())

# A tag as the HTML tokenizer reads it: a quote opens a value only after "=", and possessive
# quantifiers keep a tag with no ">" (read to the end of input, as HTML does) linear.
_SPACE = r"\t\n\f\r "
_ATTRIBUTE = (rf"[{_SPACE}/]*+([^{_SPACE}/>][^{_SPACE}/=>]*+)"
              rf"""(?:[{_SPACE}]*+=[{_SPACE}]*+("[^"]*+"|'[^']*+'|[^{_SPACE}>]*+))?+""")
_TAG = re.compile(rf"<(/?)([A-Za-z][^{_SPACE}/>]*+)((?:{_ATTRIBUTE})*+)[{_SPACE}/]*+>")
_ATTRIBUTES = re.compile(_ATTRIBUTE)
_COMMENT_END = re.compile(r"--!?>")
# Where a token can start; any other "<" is text.
_TOKEN_START = re.compile(r"<[A-Za-z!?/]")
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_RAW_END = {name: re.compile(rf"</{name}[{_SPACE}/>]", re.IGNORECASE) for name in _RAW_TEXT}

_MAX_ORPHANS = 8  # formatting elements re-opened after an implicit close, as HTML5 does
_MAX_REOPENED = 10_000  # over the whole document: each re-opening is an element for the sanitizer


_LIST_SCOPE = _SCOPE | {"ol", "ul"}
_LIST_ITEM_STOP = SPECIAL - {"address", "div", "p"}
# The element sets a search for an open element stops at. The builder keeps, for each, the
# stack positions of its members, so a search costs O(1) however deep the stack is.
_BOUNDARIES = (_SCOPE, _BUTTON_SCOPE, _TABLE_SCOPE, _LIST_SCOPE, SPECIAL, _LIST_ITEM_STOP)


class _Builder:
    def __init__(self, max_depth):
        self.max_depth = max_depth
        self.out = []
        self.stack = []  # [(name, canonical start tag)]
        self.positions = {}  # name -> stack positions of the open elements of that name
        self.bounded = {id(b): [] for b in _BOUNDARIES}  # boundary set -> stack positions of its members
        self.orphans = []  # formatting elements closed implicitly, to re-open before text
        self.dropped = {}  # name -> start tags dropped past max_depth, whose end tags are dropped too
        self.dropped_total = 0
        self.reopened = 0
        self.skip = None  # [name, level] while inside an element dropped with its content

    # --- stack ---------------------------------------------------------------------------------------

    def find(self, names, boundaries):
        """Stack position of the topmost open element in `names` with no `boundaries` member
        above it, or -1."""
        index = -1
        for name in names:
            open_ = self.positions.get(name)
            if open_ and open_[-1] > index:
                index = open_[-1]
        if index < 0:
            return -1
        members = self.bounded[id(boundaries)]
        return index if not members or members[-1] <= index else -1

    def pop_to(self, index, closing=None):
        """Close the elements from the top down to `index`; formatting elements closed on the
        way (not the one an end tag names) are re-opened before the next text."""
        while len(self.stack) > index:
            name, tag = self.stack.pop()
            self.positions[name].pop()
            for boundaries in _BOUNDARIES:
                if name in boundaries:
                    self.bounded[id(boundaries)].pop()
            self.out.append(f"</{name}>")
            if name in _MARKERS:
                self.orphans.clear()
            elif name in FORMATTING and not (len(self.stack) == index and name == closing):
                if len(self.orphans) < _MAX_ORPHANS:
                    self.orphans.insert(0, (name, tag))

    def push(self, name, tag):
        position = len(self.stack)
        self.stack.append((name, tag))
        self.positions.setdefault(name, []).append(position)
        for boundaries in _BOUNDARIES:
            if name in boundaries:
                self.bounded[id(boundaries)].append(position)
        self.out.append(tag)

    # --- tokens --------------------------------------------------------------------------------------

    def text(self, text):
        if self.orphans and not text.isspace():
            orphans, self.orphans = self.orphans, []
            for name, tag in orphans:
                if len(self.stack) < self.max_depth and self.reopened < _MAX_REOPENED:
                    self.reopened += 1
                    self.push(name, tag)
        self.out.append(text.replace("<", "&lt;"))

    def start(self, name, attributes):
        if name in _IGNORED:
            return False
        stack = self.stack
        depth = len(stack)
        if name in _CLOSES_P:
            self.close("p", _BUTTON_SCOPE)
        if name in HEADINGS and stack and stack[-1][0] in HEADINGS:
            self.pop_to(len(stack) - 1)
        if name == "li" or name in ("dd", "dt"):
            self.close({"li"} if name == "li" else {"dd", "dt"}, _LIST_ITEM_STOP)
        elif name in ("td", "th"):
            self.close({"td", "th"}, _TABLE_SCOPE)
        elif name == "tr":
            self.close({"tr"}, _TABLE_SCOPE)
        elif name in ("tbody", "thead", "tfoot"):
            self.close({"tbody", "thead", "tfoot"}, _TABLE_SCOPE)
        elif name in ("option", "optgroup"):
            if stack and stack[-1][0] == "option":
                self.pop_to(len(stack) - 1)
            if name == "optgroup" and stack and stack[-1][0] == "optgroup":
                self.pop_to(len(stack) - 1)
        elif name in ("a", "nobr", "button"):
            self.close(name, _SCOPE, closing=name)
        if name in VOID:
            self.out.append(_canonical(name, attributes))
            return False
        if len(stack) >= self.max_depth:
            self.dropped[name] = self.dropped.get(name, 0) + 1
            self.dropped_total += 1
            return depth == len(stack)  # dropped, and nothing else changed
        if name in _MARKERS:
            self.orphans.clear()
        self.push(name, _canonical(name, attributes))

    def end(self, name):
        if name in _IGNORED:
            return
        if name == "br":
            self.out.append("<br>")
            return
        if self.dropped.get(name):
            self.dropped[name] -= 1
            return
        if name in FORMATTING:
            if not self.close(name, _SCOPE, closing=name):
                self.orphans = [o for o in self.orphans if o[0] != name]
            return
        if name in HEADINGS:
            self.close(HEADINGS, _SCOPE)
        elif name == "li":
            self.close(name, _LIST_SCOPE)
        elif name == "p":
            self.close(name, _BUTTON_SCOPE)
        elif name in _TABLE_PARTS:
            self.close(name, _TABLE_SCOPE)
        elif name in SPECIAL:
            self.close(name, _SCOPE)
        else:  # HTML5's "any other end tag": it closes nothing past a special element
            self.close(name, SPECIAL)

    def close(self, names, boundaries, closing=None):
        index = self.find((names,) if isinstance(names, str) else names, boundaries)
        if index >= 0:
            self.pop_to(index, closing)
        return index >= 0

    def finish(self):
        self.pop_to(0)
        return "".join(self.out)


def _canonical(name, attributes):
    """The start tag written so any HTML parser reads it one way: every value double-quoted."""
    if not attributes.strip("\t\n\f\r /"):
        return f"<{name}>"
    parts = [f"<{name}"]
    for match in _ATTRIBUTES.finditer(attributes):
        attribute, value = match.group(1).lower(), match.group(2)
        if value is None:
            parts.append(f" {attribute}")
            continue
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        parts.append(f' {attribute}="{value.replace(chr(34), "&quot;")}"')
    return "".join(parts) + ">"


def bound_nesting(markup, max_depth):
    """Return (HTML nested at most `max_depth` deep, a warning or None)."""
    builder = _Builder(max_depth)
    pos = 0
    while True:
        found = _TOKEN_START.search(markup, pos)
        lt = found.start() if found else len(markup)
        if lt > pos and builder.skip is None:
            builder.text(markup[pos:lt])
        if found is None:
            break
        pos = _token(markup, lt, builder)
    html = builder.finish()
    if not builder.dropped_total:
        return html, None
    return html, (f"HTML nested deeper than {max_depth} elements; {builder.dropped_total:,} tags past that depth "
                  "were dropped")


def _token(markup, pos, builder):
    """Handle the markup starting at `pos` (a "<"); return where the next token starts."""
    if markup.startswith("<!--", pos):
        if markup.startswith(("<!-->", "<!--->"), pos):
            return markup.index(">", pos) + 1
        end = _COMMENT_END.search(markup, pos + 4)
        return end.end() if end else len(markup)
    following = markup[pos + 1]
    if following in "!?" or (following == "/" and not _ASCII_LETTER.match(markup, pos + 2)):
        end = markup.find(">", pos + 1)  # doctype, bogus comment, "</>" or "</ ...>"
        return len(markup) if end < 0 else end + 1
    match = _TAG.match(markup, pos)
    if match is None:  # no ">" before the end: HTML drops the unfinished tag and stops there
        return len(markup)
    is_end, name = match.group(1), match.group(2).lower()
    end = match.end()
    if builder.skip is not None:
        _skipping(builder, name, is_end)
        return _after_raw_text(markup, end, name) if name in _RAW_TEXT and not is_end else end
    if is_end:
        builder.end(name)
        return end
    if name == "plaintext":  # everything after it is text
        builder.text(markup[end:])
        return len(markup)
    if name in _RAW_TEXT:
        return _after_raw_text(markup, end, name)
    if name in _SKIPPED:
        builder.skip = [name, 1]
        return end
    if builder.start(name, match.group(3)):
        # The same tag again would be dropped again: count a run of it at C speed.
        repeats = len(re.compile(f"(?:{re.escape(match.group(0))})*+").match(markup, end).group(0))
        repeats //= end - pos
        builder.dropped[name] += repeats
        builder.dropped_total += repeats
        return end + repeats * (end - pos)
    return end


def _skipping(builder, name, is_end):
    skip = builder.skip
    if name == skip[0]:
        skip[1] += -1 if is_end else 1
        if skip[1] == 0:
            builder.skip = None


def _after_raw_text(markup, pos, name):
    """Where the markup goes on after a raw-text element's content and its end tag."""
    found = _RAW_END[name].search(markup, pos)
    if found is None:
        return len(markup)
    match = _TAG.match(markup, found.start())
    return match.end() if match else len(markup)
