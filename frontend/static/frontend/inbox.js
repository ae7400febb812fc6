/* Inbox: keyset-paged list, filters and search, multi-select batch actions, live rows. */
"use strict";
(() => {
  const {api, el, formatDate, debounce, status, connect} = Mailgate;
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
    return params;
  }

  // Newest first; undated last; ties by id (the API's keyset order).
  function before(a, b) {
    if (a.date && b.date) {
      if (a.date !== b.date) return new Date(a.date) > new Date(b.date);
      return a.id > b.id;
    }
    if (a.date !== b.date) return Boolean(a.date);
    return a.id > b.id;
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
      el("td", {className: "sender"}, row.sender.name || row.sender.address || "—"),
      el("td", {className: "subject"},
        el("a", {href: row.url}, row.subject || "(no subject)"),
        row.snippet ? el("span", {className: "snippet"}, " — " + row.snippet) : null),
      el("td", {className: "attach"}, row.has_attachments ? "📎" : ""),
      el("td", {className: "date", title: row.date || ""}, formatDate(row.date)));
  }

  function render() {
    tbody.replaceChildren(...rows.map(renderRow));
    empty.hidden = rows.length > 0;
    loadMore.hidden = !nextCursor;
    updateSelection();
  }

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

  /* Re-read some rows under the current filters: insert, replace or drop each. */
  async function refresh(ids) {
    if (!ids.length) return;
    const mine = generation;
    const params = filterParams();
    for (const id of ids) params.append("id", id);
    let page;
    try { page = await api(`/api/messages/?${params}&limit=200`); } catch (e) { return; }
    if (mine !== generation) return;
    const fresh = new Map(page.results.map((r) => [r.id, r]));
    for (const id of ids) {
      const index = rows.findIndex((r) => r.id === id);
      const row = fresh.get(id);
      if (index >= 0) rows.splice(index, 1);
      if (!row) continue;
      const last = rows[rows.length - 1];
      // Below the last loaded row it belongs to a page not fetched yet ("Load more").
      if (nextCursor && last && before(last, row)) continue;
      let at = rows.findIndex((r) => before(row, r));
      if (at < 0) at = rows.length;
      rows.splice(at, 0, row);
    }
    render();
  }

  async function act(action) {
    const ids = [...selected];
    if (!ids.length) { status("Select messages first.", true); return; }
    const body = {action, ids};
    if (action === "move") {
      body.folder = document.getElementById("move-target").value;
      if (!body.folder) { status("Choose a folder to move to.", true); return; }
    }
    status("Working…");
    try {
      const result = await api("/api/messages/batch/", {method: "POST", body});
      status(result.errors.length ? `${result.errors.length} failed: ${result.errors[0].error}` :
             `Done (${result.updated.length}).`, result.errors.length > 0);
      await refresh(ids);
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
        if (data.many) reloadSoon(); else refresh(data.ids || [data.id]);
      } else if (event.type === "sync.progress") {
        showSync(data);
      }
    },
    resync: reload,
  });
  reload();
})();
