/* Inbox: a folder sidebar with live unread counts, a keyset-paged list in arrival order with
 * virtual scrolling (the DOM holds a window of rows however many are loaded), filters and search
 * in the URL, multi-select batch actions with Undo, keyboard shortcuts, live rows (new mail on
 * top, an "N new" pill when scrolled away, the unread count in the title, announced to screen
 * readers), and loading, empty and error states. */
"use strict";
(() => {
  const {api, el, formatDate, formatDateTime, debounce, status, connect} = Mailgate;
  const UNDO_MS = 8000;
  const PAGE = 50;            // rows of the first page (the API default); later pages take 200
  const RENDER_ALL_UP_TO = 150;  // below this every row is in the DOM (find-in-page works)
  const OVERSCAN = 15;        // rows rendered beyond each edge of the viewport
  const INVERSE = {read: "unread", unread: "read", flag: "unflag", unflag: "flag"};
  const DATA = JSON.parse(document.getElementById("inbox-data").textContent);
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
      el("td", {className: "date", title: row.date ? `Sent ${formatDateTime(row.date)}` : "No date"},
         el("time", {datetime: row.date || ""}, formatDate(row.date))));
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
  const countsSoon = debounce(() => { updateCounts(); updateSidebar(); }, 300);

  /* "N new" when mail arrives while the list is scrolled away from its top. */
  const pill = document.getElementById("new-pill");
  const announcer = document.getElementById("announcer");
  let unseenNew = 0;
  function noteNew(added) {
    if (!added.length) return;
    const first = added[0];
    announcer.textContent = added.length === 1
      ? `New message from ${first.sender.name || first.sender.address}: ${first.subject || "(no subject)"}`
      : `${added.length} new messages`;
    if (window.scrollY < 80) return;
    unseenNew += added.length;
    pill.textContent = `${unseenNew} new`;
    pill.hidden = false;
  }
  function clearPill() { unseenNew = 0; pill.hidden = true; }
  pill.addEventListener("click", () => { window.scrollTo({top: 0}); clearPill(); });
  window.addEventListener("scroll", () => { if (window.scrollY < 80) clearPill(); }, {passive: true});

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
  async function refresh(ids, isNew = false) {
    if (!ids.length) return;
    const mine = generation;
    const params = filterParams();
    for (const id of ids) params.append("id", id);
    let page;
    try { page = await api(`/api/messages/?${params}&limit=200`); } catch (e) { return; }
    if (mine !== generation) return;
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
    if (isNew) noteNew(added);
  }

  /* ---- Undo ---- */
  const undoBar = document.getElementById("undo-bar");
  let undoTimer = null;
  let undoSteps = null;
  function offerUndo(text, steps, until = Date.now() + UNDO_MS) {
    if (!steps.length || until <= Date.now()) return;
    undoSteps = steps;
    document.getElementById("undo-text").textContent = text;
    undoBar.hidden = false;
    clearTimeout(undoTimer);
    undoTimer = setTimeout(() => { undoBar.hidden = true; undoSteps = null; }, until - Date.now());
  }
  document.getElementById("undo").addEventListener("click", async () => {
    const steps = undoSteps;
    undoBar.hidden = true; undoSteps = null; clearTimeout(undoTimer);
    if (!steps) return;
    status("Undoing…");
    try {
      let failed = 0;
      for (const step of steps) {
        const result = await api("/api/messages/batch/", {method: "POST", body: step});
        failed += result.errors.length;
        await refresh(step.ids);
      }
      status(failed ? `Undo failed for ${failed}.` : "Undone.", failed > 0);
    } catch (e) { status(e.message, true); }
  });
  try {
    const saved = JSON.parse(sessionStorage.getItem("mailgate.undo") || "null");
    sessionStorage.removeItem("mailgate.undo");
    if (saved) offerUndo(saved.text, saved.steps, saved.until);
  } catch (e) { /* nothing to undo */ }

  /* ---- Actions ---- */
  const VERB = {read: "Marked read", unread: "Marked unread", flag: "Starred", unflag: "Unstarred",
                move: "Moved", archive: "Archived", delete: "Moved to Trash", delete_forever: "Deleted for good"};

  function confirmForever(n) {
    const dialog = document.getElementById("confirm-forever");
    document.getElementById("confirm-text").textContent =
      `Delete ${n} message${n === 1 ? "" : "s"} for good? This cannot be undone.`;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
      dialog.showModal();
    });
  }

  // What an action applies to: the selection, or else the keyboard's highlighted row.
  function targets() {
    if (selected.size) return [...selected];
    return rows[cursorIndex] ? [rows[cursorIndex].id] : [];
  }

  async function act(action, ids = targets()) {
    if (!ids.length) { status("Select messages first.", true); return; }
    if (action === "archive") return archive(ids);
    const body = {action, ids};
    if (action === "move") {
      body.folder = document.getElementById("move-target").value;
      if (!body.folder) { status("Choose a folder to move to.", true); return; }
    }
    if (action === "delete_forever") {
      if (!await confirmForever(ids.length)) return;
      body.confirm = true;
    }
    const wanted = new Set(ids);
    // Who changes, for a flag Undo: only rows whose state the action really flips.
    const flips = {read: (r) => r.unread, unread: (r) => !r.unread, flag: (r) => !r.flagged,
                   unflag: (r) => r.flagged}[action];
    const changed = flips ? rows.filter((r) => wanted.has(r.id) && flips(r)).map((r) => r.id) : [];
    status("Working…");
    try {
      const result = await api("/api/messages/batch/", {method: "POST", body});
      status(result.errors.length ? `${result.errors.length} failed: ${result.errors[0].error}` :
             `Done (${result.updated.length}).`, result.errors.length > 0);
      if (result.notices && result.notices.length) status(result.notices.join(" "));
      await refresh(ids);
      const done = new Set(result.updated);
      const steps = flips ? [{action: INVERSE[action], ids: changed.filter((id) => done.has(id))}].filter((s) => s.ids.length)
                          : (result.undo || []);
      offerUndo(`${VERB[action]} (${result.updated.length}).`, steps);
    } catch (e) {
      status(e.message, true);
    }
  }

  // Archive = move to each account's archive folder (one request per account).
  async function archive(ids) {
    const byFolder = new Map();
    const missing = [];
    for (const id of ids) {
      const row = rows.find((r) => r.id === id);
      const folder = row && DATA.archive[String(row.account)];
      if (!folder) { missing.push(id); continue; }
      if (!byFolder.has(folder)) byFolder.set(folder, []);
      byFolder.get(folder).push(id);
    }
    if (!byFolder.size) { status("No archive folder on this account: use Move to….", true); return; }
    status("Archiving…");
    try {
      const undo = [];
      let updated = 0, errors = [];
      for (const [folder, group] of byFolder) {
        const result = await api("/api/messages/batch/", {method: "POST", body: {action: "move", folder, ids: group}});
        updated += result.updated.length;
        errors = errors.concat(result.errors);
        undo.push(...(result.undo || []));
      }
      await refresh(ids);
      status(errors.length ? `${errors.length} failed: ${errors[0].error}`
             : missing.length ? `Archived ${updated}; ${missing.length} have no archive folder.` : `Done (${updated}).`,
             errors.length > 0 || missing.length > 0);
      offerUndo(`Archived (${updated}).`, undo);
    } catch (e) { status(e.message, true); }
  }

  document.querySelectorAll("#toolbar button[data-action]").forEach((button) => {
    button.addEventListener("click", () => act(button.dataset.action, [...selected]));
  });
  selectAll.addEventListener("change", () => {
    selected = selectAll.checked ? new Set(rows.map((r) => r.id)) : new Set();
    updateSelection();
  });

  /* ---- Filters, search, sidebar ---- */
  function filtersChanged(push) {
    clearPill();
    cursorIndex = -1;
    toUrl(push);
    rows = []; nodes = new Map();
    window.scrollTo({top: 0});
    reload();
  }
  // Starting a search is a history entry (Back returns to the list); refining it is not.
  const searchLater = debounce(() => filtersChanged(!new URLSearchParams(location.search).get("q")), 250);
  search.addEventListener("input", searchLater);
  // A finished search (Enter, leaving the box) becomes its own history entry.
  search.addEventListener("change", () => { toUrl(true); });
  form.addEventListener("change", (event) => { if (event.target !== search) filtersChanged(true); });
  const sidebar = document.getElementById("sidebar");
  sidebar.addEventListener("click", (event) => {
    const link = event.target.closest("a.folder-link");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    form.elements.folder.value = link.dataset.folder;
    form.elements.account.value = "";
    closeSidebar();
    filtersChanged(true);
  });
  window.addEventListener("popstate", () => { fromUrl(); rows = []; nodes = new Map(); reload(); });

  // Narrow screens: the sidebar is a drawer.
  const toggleButton = document.getElementById("toggle-sidebar");
  const scrim = document.getElementById("scrim");
  function closeSidebar() {
    document.body.classList.remove("sidebar-open");
    toggleButton.setAttribute("aria-expanded", "false");
    scrim.hidden = true;
  }
  toggleButton.addEventListener("click", () => {
    const opening = !document.body.classList.contains("sidebar-open");
    document.body.classList.toggle("sidebar-open", opening);
    toggleButton.setAttribute("aria-expanded", String(opening));
    scrim.hidden = !opening;
    if (opening) (sidebar.querySelector("[aria-current]") || sidebar.querySelector("a")).focus();
  });
  scrim.addEventListener("click", closeSidebar);

  /* ---- Keyboard ---- */
  const help = document.getElementById("help");
  document.getElementById("help-button").addEventListener("click", () => help.showModal());
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
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    // Shortcuts wait while the user types (a checkbox or a link with focus is not typing).
    const typing = event.target.closest("input:not([type=checkbox]):not([type=radio]), textarea, select, [contenteditable]");
    if (event.key === "Escape") {
      if (event.target === search) { search.blur(); return; }
      if (selected.size) { selected.clear(); updateSelection(); }
      return;
    }
    if (typing || document.querySelector("dialog[open]")) return;
    const current = rows[cursorIndex];
    const keys = {
      j: () => moveCursor(cursorIndex + 1),
      k: () => moveCursor(cursorIndex < 0 ? 0 : cursorIndex - 1),
      o: () => current && open(current),
      Enter: () => current && !event.target.closest("a, button") && open(current),
      x: () => current && toggle(current.id),
      e: () => act("archive"),
      "#": () => act(inTrash() ? "delete_forever" : "delete"),
      r: () => act("read"),
      u: () => act("unread"),
      s: () => {
        const ids = targets();
        const anyUnstarred = rows.some((r) => ids.includes(r.id) && !r.flagged);
        act(anyUnstarred ? "flag" : "unflag", ids);
      },
      "/": () => search.focus(),
      "?": () => help.showModal(),
    };
    const handler = keys[event.key];
    if (!handler) return;
    event.preventDefault();
    handler();
  });

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

  /* ---- Live ---- */
  // A first sync's batch is too many to refresh one by one: reload the page's rows, at most twice a second.
  const reloadSoon = debounce(reload, 500);
  const syncing = new Map();  // "account/folder" -> {done, total}
  function showSync(data) {
    const key = `${data.account_id}/${data.folder}`;
    if (data.done >= data.total) syncing.delete(key); else syncing.set(key, data);
    const line = document.getElementById("sync-progress");
    line.hidden = syncing.size === 0;
    line.textContent = [...syncing.values()].map((d) =>
      `Syncing ${accountName(d.account_id)} / ${d.folder}: ${d.done.toLocaleString()} of ${d.total.toLocaleString()}`).join(" · ");
  }
  function accountName(id) {
    const link = document.querySelector(`#sidebar a[data-account="${id}"]`);
    return link ? link.dataset.label.split(" / ")[0] : `account ${id}`;
  }

  history.scrollRestoration = "manual";
  fromUrl();
  connect({
    onEvent(event) {
      const data = event.data || {};
      if (event.type === "message.new" || event.type === "message.updated") {
        if (data.many) reloadSoon(); else refresh(data.ids || [data.id], event.type === "message.new");
        countsSoon();
      } else if (event.type === "sync.progress") {
        showSync(data);
      }
    },
    resync: () => { countsSoon(); return reload(); },
  });
  reload().then(restore);
  updateSidebar();
})();
