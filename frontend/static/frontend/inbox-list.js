/* Inbox, the list (loaded first; inbox-actions.js and inbox.js build on it): a keyset-paged list
 * in arrival order with virtual scrolling (the DOM holds a window of rows however many are
 * loaded), filters and search in the URL, the folder sidebar's live unread counts and the tab
 * title, selection, the keyboard's highlighted row, loading, empty and error states, and the
 * list's place kept for Back from a message. */
"use strict";
const InboxList = (() => {
  const {api, el, formatDate, formatDateTime, debounce, status, narrow} = Mailgate;
  const PAGE = 50;            // rows of the first page (the API default); later pages take 200
  const RENDER_ALL_UP_TO = 150;  // below this every row is in the DOM (find-in-page works)
  const OVERSCAN = 15;        // rows rendered beyond each edge of the viewport
  const form = document.getElementById("filters");
  const tbody = document.getElementById("message-rows");
  const loadMore = document.getElementById("load-more");
  const selectAll = document.getElementById("select-all");
  const count = document.getElementById("selection-count");
  const search = document.getElementById("search");
  let rows = [];            // every loaded row, in order
  let nextCursor = null;
  let loading = false;
  let selected = new Set();
  let cursorIndex = -1;     // the keyboard's highlighted row
  let generation = 0;       // drops answers to superseded requests (typing fast in the search box)

  /* ---- Filters <-> URL (Back restores them; a view can be bookmarked) ---- */
  const FIELDS = ["q", "account", "folder", "unread", "flagged", "has_attachment", "after", "before"];
  function filterParams(forUrl = false) {
    const params = new URLSearchParams();
    for (const name of FIELDS) {
      const field = form.elements[name];
      if (field.type === "checkbox") { if (field.checked) params.set(name, "1"); }
      else if (field.value.trim()) params.set(name, field.value.trim());
    }
    // Words and meaning, best first, unless "Exact words only" asks for the plain full-text list.
    // The URL keeps the switch (exact=1) and only when it is on, so a plain search reads ?q=...
    const exact = document.getElementById("exact-words").checked;
    if (params.has("q")) {
      if (forUrl) { if (exact) params.set("exact", "1"); }
      else params.set("mode", exact ? "text" : "hybrid");
    }
    return params;
  }
  function fromUrl() {
    const params = new URLSearchParams(location.search);
    for (const name of FIELDS) {
      const field = form.elements[name];
      if (field.type === "checkbox") field.checked = params.get(name) === "1";
      else field.value = params.get(name) || "";
    }
    document.getElementById("exact-words").checked = params.get("exact") === "1";
    form.querySelector("details").open = ["unread", "flagged", "has_attachment", "after", "before"].some((n) => params.has(n));
  }
  function toUrl(push) {
    const query = filterParams(true).toString();
    const url = location.pathname + (query ? `?${query}` : "");
    if (url === location.pathname + location.search) return;
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }

  function currentFolderLink() {
    const folder = form.elements.folder.value;
    return document.querySelector(`#sidebar a.folder-link[data-folder="${CSS.escape(folder)}"]`);
  }
  function inTrash() {
    const link = currentFolderLink();
    return Boolean(link && link.dataset.trash);
  }
  function showPlace() {
    const link = currentFolderLink();
    document.querySelectorAll("#sidebar a.folder-link").forEach((a) => a.removeAttribute("aria-current"));
    if (link) link.setAttribute("aria-current", "page");
    const query = form.elements.q.value.trim();
    const place = link && link.dataset.folder ? link.dataset.label : "All mail";
    document.getElementById("list-title").textContent = query ? `Search: ${query}` : place;
    document.title = titled(place);
    const trash = inTrash();
    document.getElementById("delete").hidden = trash;
    document.getElementById("delete-forever").hidden = !trash;
  }

  /* ---- Rows ---- */
  // Microseconds since the epoch: arrivals in the same millisecond still keep the server's order.
  function arrival(iso) {
    const fraction = /\.(\d+)/.exec(iso);
    return Date.parse(iso) * 1000 + (fraction ? Number((fraction[1] + "000000").slice(0, 6)) % 1000 : 0);
  }
  // Latest arrival first, ties by id: the API's keyset order (never the Date header).
  function before(a, b) {
    const x = arrival(a.arrived_at), y = arrival(b.arrived_at);
    if (x !== y) return x > y;
    return a.id > b.id;
  }

  // The searched words, marked where a word of the text starts with one (search matches prefixes).
  function searchWords() {
    return (form.elements.q.value.match(/[\p{L}\p{N}_]+/gu) || []).slice(0, 12);
  }
  let marker = null;
  function updateMarker() {
    const words = searchWords().map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    marker = words.length ? new RegExp(`(?<![\\p{L}\\p{N}_])(${words.join("|")})`, "giu") : null;
  }
  function marked(text) {
    if (!marker || !text) return [text];
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(marker)) {
      if (match.index > last) parts.push(text.slice(last, match.index));
      parts.push(el("mark", {}, match[0]));
      last = match.index + match[0].length;
    }
    parts.push(text.slice(last));
    return parts;
  }

  function renderRow(row) {
    const checkbox = el("input", {type: "checkbox", className: "select", checked: selected.has(row.id),
                                  "aria-label": `Select: ${row.subject || "(no subject)"}`});
    const sender = row.sender.name || row.sender.address || "—";
    const when = row.date || row.arrived_at;  // mail without a Date header: when it arrived
    const classes = ["message-row", row.unread ? "unread" : "read", row.flagged ? "flagged" : "",
                     selected.has(row.id) ? "selected" : ""].join(" ");
    return el("tr", {className: classes, dataset: {id: row.id, unread: String(row.unread), flagged: String(row.flagged)}},
      el("td", {className: "check"}, el("label", {className: "hit"}, checkbox)),
      el("td", {className: "flag"}, row.flagged ? el("span", {role: "img", "aria-label": "Starred"}, "★") : ""),
      el("td", {className: "sender", title: row.sender.address || ""}, marked(sender)),
      el("td", {className: "subject"},
        el("a", {href: row.url}, marked(row.subject || "(no subject)")),
        row.snippet ? el("span", {className: "snippet"}, " — ", marked(row.snippet)) : null),
      el("td", {className: "attach"},
         row.has_attachments ? el("span", {className: "clip", role: "img", "aria-label": "Has attachments"}) : ""),
      // The Date header is shown (it is what the sender wrote); placing the row is arrival's job.
      // Mail without one shows when it arrived, as mail clients do, not a blank.
      el("td", {className: "date", title: row.date ? `Sent ${formatDateTime(row.date)}`
                                                   : `No Date header; arrived ${formatDateTime(row.arrived_at)}`},
         el("time", {datetime: when}, formatDate(when))));
  }

  /* ---- Virtual scrolling: rows[first, last) in the DOM between two spacer rows ---- */
  const spacerTop = spacer(), spacerBottom = spacer();
  function spacer() {
    const cell = el("td", {colspan: "6"});
    return el("tr", {className: "spacer", "aria-hidden": "true"}, cell);
  }
  function setSpacer(row, height) {
    row.hidden = height <= 0;
    row.firstChild.style.height = `${height}px`;
  }
  let rowHeight = 0;
  let shown = [0, 0];
  let nodes = new Map();    // id -> {row, node}: rows kept while they stay in the window
  function measure() {
    const probe = tbody.querySelector("tr.message-row");
    if (probe) rowHeight = probe.getBoundingClientRect().height || rowHeight;
    if (!rowHeight) rowHeight = parseFloat(getComputedStyle(tbody).getPropertyValue("--row-h")) || 36;
  }
  function windowRange() {
    if (rows.length <= RENDER_ALL_UP_TO) return [0, rows.length];
    const top = tbody.getBoundingClientRect().top;   // negative once scrolled past
    const first = Math.floor(-top / rowHeight) - OVERSCAN;
    const visible = Math.ceil(window.innerHeight / rowHeight) + 2 * OVERSCAN;
    const start = Math.max(0, Math.min(first, rows.length - visible));
    return [start, Math.min(rows.length, start + visible)];
  }
  function paint(force = false) {
    const started = performance.now();
    if (!rowHeight) measure();
    const [first, last] = windowRange();
    if (force || first !== shown[0] || last !== shown[1]) {
      const kept = new Map();
      const children = [spacerTop];
      for (let i = first; i < last; i++) {
        const row = rows[i];
        const cached = nodes.get(row.id);
        const node = cached && cached.row === row ? cached.node : renderRow(row);
        node.classList.toggle("current", i === cursorIndex);
        node.classList.toggle("selected", selected.has(row.id));
        node.querySelector("input.select").checked = selected.has(row.id);
        kept.set(row.id, {row, node});
        children.push(node);
      }
      children.push(spacerBottom);
      nodes = kept;
      tbody.replaceChildren(...children);
      setSpacer(spacerTop, first * rowHeight);
      setSpacer(spacerBottom, (rows.length - last) * rowHeight);
      shown = [first, last];
      if (first === 0 && last > 0 && rows.length > RENDER_ALL_UP_TO) measure();
      tbody.dataset.paintMs = (performance.now() - started).toFixed(2);  // read by the scrolling test
    }
    // Near the end of what is loaded: fetch the next page (keyset cursor) before it shows.
    const bottom = tbody.getBoundingClientRect().bottom;
    if (nextCursor && !loading && bottom < window.innerHeight * 2 + 400) more();
  }
  let painting = false;
  window.addEventListener("scroll", () => {
    if (painting) return;
    painting = true;
    requestAnimationFrame(() => { painting = false; paint(); });
  }, {passive: true});
  window.addEventListener("resize", debounce(() => { rowHeight = 0; paint(true); }, 100));
  // Older dates read shorter on a phone ("7/10/12"): rows drawn on the other side are drawn again.
  narrow.addEventListener("change", () => { nodes = new Map(); paint(true); });

  function render() {
    tbody.dataset.loaded = String(rows.length);  // how many rows are held (the DOM shows a window)
    updateSelection();
    paint(true);
    loadMore.hidden = !nextCursor;
    showState(rows.length ? null : "empty");
  }

  /* ---- Loading, empty and error states ---- */
  const stateBox = document.getElementById("list-state");
  function showState(which, text = "") {
    stateBox.hidden = !which;
    for (const name of ["loading", "empty", "failed"]) document.getElementById(name).hidden = which !== name;
    document.getElementById("messages").setAttribute("aria-busy", String(which === "loading"));
    if (which === "failed") document.getElementById("failed-text").textContent = text;
    if (which === "empty") {
      const line = document.getElementById("empty-text");
      if (!document.getElementById("add-account")) {
        line.textContent = form.elements.q.value.trim() ? "No messages match this search."
          : filterParams().toString() ? "No messages here." : line.textContent;
      }
    }
  }
  document.getElementById("retry").addEventListener("click", () => reload());

  /* ---- Counts: heading, sidebar, tab title ---- */
  const baseTitle = "mailgate";
  let unreadAll = 0;
  function titled(place) { return `${unreadAll ? `(${unreadAll}) ` : ""}${place} · ${baseTitle}`; }
  async function updateCounts() {
    const mine = generation;
    try {
      const params = filterParams();
      const {total, unread} = await api(`/api/messages/counts/?${params}`);
      if (mine !== generation) return;
      const n = total.toLocaleString();
      const query = form.elements.q.value.trim();
      document.getElementById("list-counts").textContent = query
        ? `${n} result${total === 1 ? "" : "s"}`
        : `${n} message${total === 1 ? "" : "s"} · ${unread.toLocaleString()} unread`;
    } catch (e) { /* the next event tries again */ }
  }
  async function updateSidebar() {
    try {
      const [{results}, {unread}] = await Promise.all([api("/api/folders/"), api("/api/stats/")]);
      for (const folder of results) {
        const badge = document.querySelector(`#sidebar a[data-folder="${folder.id}"] .badge`);
        if (!badge) continue;
        badge.dataset.unread = String(folder.unread);
        badge.textContent = folder.unread ? folder.unread.toLocaleString() : "";
        badge.setAttribute("aria-label", `${folder.unread} unread`);
      }
      unreadAll = unread;
      const all = document.getElementById("unread-all");
      all.textContent = unread ? unread.toLocaleString() : "";
      all.setAttribute("aria-label", `${unread} unread`);
      showPlace();
    } catch (e) { /* the next event tries again */ }
  }

  /* ---- Selection ---- */
  const bulk = document.getElementById("bulk");
  function updateSelection() {
    const present = new Set(rows.map((r) => r.id));
    selected = new Set([...selected].filter((id) => present.has(id)));
    count.textContent = `${selected.size} selected`;
    count.hidden = selected.size === 0;
    bulk.hidden = selected.size === 0;
    document.getElementById("toolbar").classList.toggle("active", selected.size > 0);
    selectAll.checked = rows.length > 0 && selected.size === rows.length;
    selectAll.indeterminate = selected.size > 0 && selected.size < rows.length;
    for (const {row, node} of nodes.values()) {
      node.classList.toggle("selected", selected.has(row.id));
      node.querySelector("input.select").checked = selected.has(row.id);
    }
  }
  function toggle(id, on = !selected.has(id)) {
    if (on) selected.add(id); else selected.delete(id);
    updateSelection();
  }
  tbody.addEventListener("change", (event) => {
    const tr = event.target.closest("tr.message-row");
    if (tr && event.target.matches("input.select")) toggle(tr.dataset.id, event.target.checked);
  });
  // The whole row opens the message (the subject stays a link: middle-click, open in a new tab).
  tbody.addEventListener("click", (event) => {
    const tr = event.target.closest("tr.message-row");
    if (!tr || event.target.closest("a, input, label, button")) return;
    if (window.getSelection().toString()) return;  // selecting text is not a click
    const row = rows.find((r) => r.id === tr.dataset.id);
    if (row) open(row);
  });
  function open(row) {
    saveScroll();
    location.assign(row.url);
  }

  /* ---- Fetching ---- */
  async function reload() {
    const mine = ++generation;
    const params = filterParams();
    params.set("limit", String(PAGE));
    updateMarker();
    showPlace();
    if (!rows.length) showState("loading");
    search.setAttribute("aria-busy", "true");
    try {
      const page = await api(`/api/messages/?${params}`);
      if (mine !== generation) return;
      rows = page.results;
      nextCursor = page.next_cursor;
      nodes = new Map();
      cursorIndex = Math.min(cursorIndex, rows.length - 1);
      render();
    } catch (e) {
      if (mine !== generation) return;
      rows = []; nextCursor = null; nodes = new Map(); paint(true);
      showState("failed", e.message);
    } finally {
      if (mine === generation) search.removeAttribute("aria-busy");
    }
    updateCounts();
  }

  async function more() {
    if (!nextCursor || loading) return;
    const mine = generation;
    const params = filterParams();
    params.set("cursor", nextCursor);
    params.set("limit", "200");
    loading = true;
    try {
      const page = await api(`/api/messages/?${params}`);
      if (mine !== generation) return;
      const known = new Set(rows.map((r) => r.id));
      rows = rows.concat(page.results.filter((r) => !known.has(r.id)));
      nextCursor = page.next_cursor;
    } catch (e) {
      status(e.message, true);
      return;
    } finally {
      loading = false;
    }
    render();
  }
  loadMore.addEventListener("click", () => more());

  /* Re-read some rows under the current filters: insert, replace or drop each (a message moved to
   * the Trash, or out of the chosen folder, no longer matches and leaves at once). */
  // Returns the rows that were not in the list before (for "N new"); [] when nothing was read.
  async function refresh(ids) {
    if (!ids.length) return [];
    const mine = generation;
    const params = filterParams();
    for (const id of ids) params.append("id", id);
    let page;
    try { page = await api(`/api/messages/?${params}&limit=200`); } catch (e) { return []; }
    if (mine !== generation) return [];
    const fresh = new Map(page.results.map((r) => [r.id, r]));
    const added = [];
    const current = rows[cursorIndex];
    for (const id of ids) {
      const index = rows.findIndex((r) => r.id === id);
      const row = fresh.get(id);
      if (index >= 0) rows.splice(index, 1);
      if (!row) continue;
      if (index < 0) added.push(row);
      const last = rows[rows.length - 1];
      // Below the last loaded row it belongs to a page not fetched yet.
      if (nextCursor && last && before(last, row)) continue;
      let at = rows.findIndex((r) => before(row, r));
      if (at < 0) at = rows.length;
      rows.splice(at, 0, row);
    }
    if (current) cursorIndex = rows.findIndex((r) => r.id === current.id);
    // New rows above the viewport would push what the reader looks at down: keep it in place.
    const above = window.scrollY > 80 ? added.filter((r) => rows.indexOf(r) < shown[0]).length : 0;
    render();
    if (above && rows.length > RENDER_ALL_UP_TO) window.scrollBy(0, above * rowHeight);
    return added;
  }

  selectAll.addEventListener("change", () => {
    selected = selectAll.checked ? new Set(rows.map((r) => r.id)) : new Set();
    updateSelection();
  });
  function moveCursor(to) {
    if (!rows.length) return;
    cursorIndex = Math.max(0, Math.min(rows.length - 1, to));
    // Bring it into view (rows outside the window are not in the DOM yet).
    const top = tbody.getBoundingClientRect().top + window.scrollY + cursorIndex * rowHeight;
    const stickyBottom = document.getElementById("toolbar").getBoundingClientRect().bottom;
    if (top < window.scrollY + stickyBottom) window.scrollTo({top: top - stickyBottom});
    else if (top + rowHeight > window.scrollY + window.innerHeight) window.scrollTo({top: top + rowHeight - window.innerHeight});
    paint(true);
    const node = tbody.querySelector("tr.current");
    if (node) node.querySelector("a").focus({preventScroll: true});
    if (cursorIndex >= rows.length - 5) more();
  }

  /* ---- The list's place, kept for Back from a message ---- */
  function saveScroll() {
    sessionStorage.setItem("mailgate.list", JSON.stringify({url: location.pathname + location.search,
      y: window.scrollY, count: rows.length, cursor: cursorIndex}));
  }
  window.addEventListener("pagehide", saveScroll);
  async function restore() {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem("mailgate.list") || "null"); } catch (e) { saved = null; }
    const nav = performance.getEntriesByType("navigation")[0];
    if (!saved || saved.url !== location.pathname + location.search || !nav || nav.type !== "back_forward") return;
    // Keyset pages up to where the reader was (at most a few pages), then the same scroll.
    while (rows.length < Math.min(saved.count, 2000) && nextCursor) await more();
    cursorIndex = Math.min(saved.cursor, rows.length - 1);
    window.scrollTo({top: saved.y});
    paint(true);
  }

  // A new view: nothing loaded, and (unless Back or Forward moves between views) no highlighted row.
  function forget(cursorToo = true) {
    rows = []; nodes = new Map();
    if (cursorToo) cursorIndex = -1;
  }

  return {
    get rows() { return rows; },
    get selected() { return selected; },
    get cursor() { return cursorIndex; },
    form, search, tbody,
    fromUrl, toUrl, inTrash, updateSelection, toggle, open, moveCursor,
    reload, more, refresh, forget, restore, updateCounts, updateSidebar,
  };
})();
