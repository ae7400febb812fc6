"""HTML from a message made safe to show inside mailgate's own pages.

nh3 (ammonia) does the parsing and allow-listing; this module adds what it does not do for mail:
remote images are parked in `data-remote-src` so opening a message does not tell the sender
(tracking pixels), `data:` URLs survive only as image sources, relative URLs (which would point at
mailgate itself) are dropped, and inline styles keep only properties that cannot fetch anything.
"""

import html
import re

import nh3

from .html_nesting import bound_nesting
from .result import DEFAULT_LIMITS

_TAGS = {
    "a", "abbr", "address", "article", "aside", "b", "bdi", "bdo", "big", "blockquote", "br",
    "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn", "div",
    "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp",
    "section", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
}
# Removed with everything inside them: their content is code, or markup that other tags would
# otherwise turn back into visible text.
_CLEAN_CONTENT_TAGS = {
    "script", "style", "title", "noscript", "template", "iframe", "object", "embed", "applet",
    "svg", "math", "xmp", "noembed", "noframes", "frameset", "frame", "textarea", "select",
}
# No `id`, `name` or `class`: they let a message clobber DOM globals or borrow mailgate's own CSS.
_GENERIC_ATTRIBUTES = {
    "align", "valign", "width", "height", "dir", "lang", "title", "style", "bgcolor", "border",
    "cellpadding", "cellspacing", "colspan", "rowspan", "nowrap", "color", "face", "size", "span",
    "start", "type", "reversed", "scope", "abbr", "headers", "summary", "datetime",
}
_ATTRIBUTES = {"*": _GENERIC_ATTRIBUTES, "a": {"href", "hreflang"}, "img": {"src", "alt"}}
# Properties that take no URL; `position` and friends are left out so a message cannot lay
# itself over the page around it.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "font-variant", "text-align", "text-decoration", "text-transform", "text-indent",
    "letter-spacing", "word-spacing", "line-height", "white-space", "vertical-align", "direction",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding",
    "padding-top", "padding-right", "padding-bottom", "padding-left", "border", "border-top",
    "border-right", "border-bottom", "border-left", "border-color", "border-style", "border-width",
    "border-collapse", "border-spacing", "border-radius", "width", "height", "max-width",
    "min-width", "max-height", "min-height", "display", "list-style-type", "table-layout",
    "text-overflow", "word-break", "word-wrap", "overflow-wrap", "opacity",
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}

# "http:host/x" without slashes is absolute too: browsers read it as "http://host/x".
_LINK_PREFIXES = ("http:", "https:", "//", "mailto:", "tel:")
_REMOTE_PREFIXES = ("http:", "https:", "//")
_IMAGE_PREFIXES = _REMOTE_PREFIXES + ("cid:",)
# svg+xml is left out: an SVG opened on its own (e.g. "open image in new tab") runs scripts.
_DATA_IMAGE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp);", re.IGNORECASE)
# Browsers ignore tabs, newlines and leading controls in URLs ("java\tscript:").
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")
_DANGEROUS_CSS = re.compile(r"url\s*\(|image\s*\(|image-set|expression|javascript:|@import|\\|behavior",
                            re.IGNORECASE)
_NEGATIVE_MARGIN = re.compile(r"^\s*margin[\w-]*\s*:.*-\s*\d", re.IGNORECASE)

# nh3 serializes every attribute as name="value" with `"`, `<` and `>` escaped, so these simple
# patterns are exact on its output (and only on its output).
_IMG_TAG = re.compile(r"<img\b([^>]*)>")
_ATTRIBUTE = re.compile(r'([^\s="]+)(?:="([^"]*)")?')


def _normalized_url(value):
    return _URL_NOISE.sub("", html.unescape(value)).lower()


def _filter_attribute(tag, attribute, value):
    if attribute == "style":
        kept = [d for d in value.split(";") if not _DANGEROUS_CSS.search(d) and not _NEGATIVE_MARGIN.match(d)]
        return ";".join(kept) or None
    if attribute == "href":
        return value if _normalized_url(value).startswith(_LINK_PREFIXES) else None
    if attribute == "src":
        url = _normalized_url(value)
        if url.startswith(_IMAGE_PREFIXES) or (tag == "img" and _DATA_IMAGE.match(url)):
            return value
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags=_CLEAN_CONTENT_TAGS,
    attributes=_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=_URL_SCHEMES,
    filter_style_properties=_STYLE_PROPERTIES,
)


def sanitize_html(markup: str, max_depth: int = DEFAULT_LIMITS.max_html_depth, warn=None) -> str:
    """Return `markup` with everything active removed and remote images parked (not loaded).

    The markup is first rebuilt with at most `max_depth` nested elements (html_nesting): nh3's
    cost grows with depth times tags. `warn`, when given, receives a sentence if tags were dropped.
    """
    if not markup:
        return ""
    # Lone surrogates (from undecodable bytes) cannot cross into Rust; NULs have no place in HTML.
    markup = markup.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    markup, problem = bound_nesting(markup, max_depth)
    if problem and warn:
        warn(problem)
    return _IMG_TAG.sub(_park_remote_image, _CLEANER.clean(markup))


def enable_remote_images(sanitized_html: str) -> str:
    """Turn parked `data-remote-src` attributes back into `src`, for "load remote images".

    Only meaningful on sanitize_html() output; as a second line of defence it restores nothing
    but http(s) and protocol-relative URLs.
    """
    return _IMG_TAG.sub(_restore_remote_image, sanitized_html or "")


def _rebuild_img(attributes):
    return "<img" + "".join(f' {name}="{value}"' for name, value in attributes) + ">"


def _park_remote_image(match):
    attributes = _ATTRIBUTE.findall(match.group(1))
    src = next((value for name, value in attributes if name == "src"), "")
    if not _normalized_url(src).startswith(_REMOTE_PREFIXES):
        return match.group(0)
    kept = [(name, value) for name, value in attributes if name not in ("src", "srcset")]
    return _rebuild_img(kept + [("data-remote-src", src)])


def _restore_remote_image(match):
    attributes = _ATTRIBUTE.findall(match.group(1))
    remote = next((value for name, value in attributes if name == "data-remote-src"), "")
    if not remote or any(name == "src" for name, _ in attributes):
        return match.group(0)
    if not _normalized_url(remote).startswith(_REMOTE_PREFIXES):
        return match.group(0)
    kept = [(name, value) for name, value in attributes if name != "data-remote-src"]
    return _rebuild_img([("src", remote)] + kept)
