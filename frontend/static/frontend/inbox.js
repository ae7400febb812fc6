/* Inbox: keyset-paged list in arrival order, filters and search, multi-select batch actions with
 * Undo, live rows (new mail on top, an "N new" pill when scrolled away, unread count in the title). */
"use strict";
(() => {
  const {api, el, formatDate, formatDateTime, debounce, status, connect} = Mailgate;
  const UNDO_MS = 8000;
  const INVERSE = {read: "unread", unread: "read", flag: "unflag", unflag: "flag"};
  const form = document.getElementById("filters");
  const tbody = document.getElementById("message-rows");
  const loadMore = document.getElementById("load-more");
  const empty = document.getElementById("empty");
  const selectAll = document.getElementById("select-all");
  const count = document.getElementById("selection-count");
  let rows = [];            // what is shown, in order
  let nextCursor = null;
  let selected = new Set();
  let generation = 0;       // drops answers to superseded requests (typing fast in the search box)

  function filterParams() {
    const params = new URLSearchParams();
    for (const field of form.elements) {
      if (!field.name) continue;
      if (field.type === "checkbox") { if (field.checked) params.set(field.name, "1"); }
      else if (field.value.trim()) params.set(field.name, field.value.trim());
    }
    // Words and meaning, best first, unless "Exact words only" asks for the plain full-text list.
    if (params.has("q")) params.set("mode", document.getElementById("exact-words").checked ? "text" : "hybrid");
    return params;
  }

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

  function inTrash() {
    const option = form.elements.folder.selectedOptions[0];
    return Boolean(option && option.dataset.trash);
  }

  function renderRow(row) {
    const checkbox = el("input", {type: "checkbox", "aria-label": "Select", className: "select",
                                  checked: selected.has(row.id)});
    checkbox.addEventListener("change", () => {
      if (checkbox.checked) selected.add(row.id); else selected.delete(row.id);
      updateSelection();
    });
    const classes = ["message-row", row.unread ? "unread" : "read", row.flagged ? "flagged" : ""].join(" ");
    return el("tr", {className: classes, dataset: {id: row.id, unread: String(row.unread), flagged: String(row.flagged)}},
      el("td", {}, checkbox),
      el("td", {className: "flag", title: row.flagged ? "Flagged" : ""}, row.flagged ? "★" : ""),
      el("td", {className: "sender", title: row.sender.address || ""}, row.sender.name || row.sender.address || "—"),
      el("td", {className: "subject"},
        el("a", {href: row.url}, row.subject || "(no subject)"),
        row.snippet ? el("span", {className: "snippet"}, " — " + row.snippet) : null),
      el("td", {className: "attach", title: row.has_attachments ? "Has attachments" : ""},
         row.has_attachments ? el("span", {className: "clip", "aria-label": "Has attachments"}) : ""),
      // The Date header is shown (it is what the sender wrote); placing the row is arrival's job.
      el("td", {className: "date", title: row.date ? `Sent ${formatDateTime(row.date)}` : "No date"},
         el("time", {datetime: row.date || ""}, formatDate(row.date))));
  }

  function render() {
    tbody.replaceChildren(...rows.map(renderRow));
    empty.hidden = rows.length > 0;
    loadMore.hidden = !nextCursor;
    const trash = inTrash();
    document.getElementById("delete").hidden = trash;
    document.getElementById("delete-forever").hidden = !trash;
    updateSelection();
  }

  /* The unread count (what the lists show, Trash aside) in the tab title. */
  const baseTitle = document.title;
  async function updateTitle() {
    try {
      const {unread} = await api("/api/stats/");
      document.title = unread ? `(${unread}) ${baseTitle}` : baseTitle;
    } catch (e) { /* the next event tries again */ }
  }
  const updateTitleSoon = debounce(updateTitle, 300);

  /* "N new" when mail arrives while the list is scrolled away from its top. */
  const pill = document.getElementById("new-pill");
  let unseenNew = 0;
  function noteNew(count) {
    if (!count || window.scrollY < 80) return;
    unseenNew += count;
    pill.textContent = `${unseenNew} new`;
    pill.hidden = false;
  }
  function clearPill() { unseenNew = 0; pill.hidden = true; }
  pill.addEventListener("click", () => { window.scrollTo({top: 0}); clearPill(); });
  window.addEventListener("scroll", () => { if (window.scrollY < 80) clearPill(); }, {passive: true});

  function updateSelection() {
    const shown = new Set(rows.map((r) => r.id));
    selected = new Set([...selected].filter((id) => shown.has(id)));
    count.textContent = `${selected.size} selected`;
    selectAll.checked = rows.length > 0 && selected.size === rows.length;
  }

  async function reload() {
    const mine = ++generation;
    const params = filterParams();
    try {
      const page = await api(`/api/messages/?${params}`);
      if (mine !== generation) return;
      rows = page.results;
      nextCursor = page.next_cursor;
      render();
    } catch (e) {
      if (mine === generation) status(e.message, true);
    }
  }

  async function more() {
    if (!nextCursor) return;
    const mine = generation;
    const params = filterParams();
    params.set("cursor", nextCursor);
    const page = await api(`/api/messages/?${params}`);
    if (mine !== generation) return;
    const known = new Set(rows.map((r) => r.id));
    rows = rows.concat(page.results.filter((r) => !known.has(r.id)));
    nextCursor = page.next_cursor;
    render();
  }

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
    let added = 0;
    for (const id of ids) {
      const index = rows.findIndex((r) => r.id === id);
      const row = fresh.get(id);
      if (index >= 0) rows.splice(index, 1);
      if (!row) continue;
      if (index < 0) added += 1;
      const last = rows[rows.length - 1];
      // Below the last loaded row it belongs to a page not fetched yet ("Load more").
      if (nextCursor && last && before(last, row)) continue;
      let at = rows.findIndex((r) => before(row, r));
      if (at < 0) at = rows.length;
      rows.splice(at, 0, row);
    }
    render();
    if (isNew) noteNew(added);
  }

  /* Undo for a few seconds after every batch action: moves go back to where each message was,
   * flags back to what they were. Kept across a page change (the message page's Delete). */
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

  const VERB = {read: "Marked read", unread: "Marked unread", flag: "Flagged", unflag: "Unflagged",
                move: "Moved", delete: "Moved to Trash", delete_forever: "Deleted for good"};

  function confirmForever(count) {
    const dialog = document.getElementById("confirm-forever");
    document.getElementById("confirm-text").textContent =
      `Delete ${count} message${count === 1 ? "" : "s"} for good? This cannot be undone.`;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
      dialog.showModal();
    });
  }

  async function act(action) {
    const ids = [...selected];
    if (!ids.length) { status("Select messages first.", true); return; }
    const body = {action, ids};
    if (action === "move") {
      body.folder = document.getElementById("move-target").value;
      if (!body.folder) { status("Choose a folder to move to.", true); return; }
    }
    if (action === "delete_forever") {
      if (!await confirmForever(ids.length)) return;
      body.confirm = true;
    }
    // Who changes, for a flag Undo: only rows whose state the action really flips.
    const flips = {read: (r) => r.unread, unread: (r) => !r.unread, flag: (r) => !r.flagged,
                   unflag: (r) => r.flagged}[action];
    const changed = flips ? rows.filter((r) => selected.has(r.id) && flips(r)).map((r) => r.id) : [];
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

  document.querySelectorAll("#toolbar button[data-action]").forEach((button) => {
    button.addEventListener("click", () => act(button.dataset.action));
  });
  selectAll.addEventListener("change", () => {
    selected = selectAll.checked ? new Set(rows.map((r) => r.id)) : new Set();
    render();
  });
  loadMore.addEventListener("click", () => more().catch((e) => status(e.message, true)));
  const searchLater = debounce(reload, 250);
  document.getElementById("search").addEventListener("input", searchLater);
  form.addEventListener("change", (event) => { if (event.target.id !== "search") reload(); });
  // The folder choice decides which delete is offered before the rows arrive.
  form.elements.folder.addEventListener("change", render);

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
    const option = form.querySelector(`select[name=account] option[value="${id}"]`);
    return option ? option.textContent : `account ${id}`;
  }

  connect({
    onEvent(event) {
      const data = event.data || {};
      if (event.type === "message.new" || event.type === "message.updated") {
        if (data.many) reloadSoon(); else refresh(data.ids || [data.id], event.type === "message.new");
        updateTitleSoon();
      } else if (event.type === "sync.progress") {
        showSync(data);
      }
    },
    resync: () => { updateTitleSoon(); return reload(); },
  });
  reload();
  updateTitle();
})();
