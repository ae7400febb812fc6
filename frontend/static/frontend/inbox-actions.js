/* Inbox, what the user does to the list (after inbox-list.js): batch actions on the selection
 * or the highlighted row (archive per account, delete to the Trash, delete for good after a
 * confirmation), Undo for a few seconds after each, and the keyboard shortcuts. */
"use strict";
(() => {
  const {api, status} = Mailgate;
  const list = InboxList;
  const {search, updateSelection, toggle, open, moveCursor, inTrash, refresh} = list;
  const UNDO_MS = 8000;
  const INVERSE = {read: "unread", unread: "read", flag: "unflag", unflag: "flag"};
  const DATA = JSON.parse(document.getElementById("inbox-data").textContent);

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
    if (list.selected.size) return [...list.selected];
    return list.rows[list.cursor] ? [list.rows[list.cursor].id] : [];
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
    const changed = flips ? list.rows.filter((r) => wanted.has(r.id) && flips(r)).map((r) => r.id) : [];
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
      const row = list.rows.find((r) => r.id === id);
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
    button.addEventListener("click", () => act(button.dataset.action, [...list.selected]));
  });

  /* ---- Keyboard ---- */
  const help = document.getElementById("help");
  document.getElementById("help-button").addEventListener("click", () => help.showModal());
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    // Shortcuts wait while the user types (a checkbox or a link with focus is not typing).
    const typing = event.target.closest("input:not([type=checkbox]):not([type=radio]), textarea, select, [contenteditable]");
    if (event.key === "Escape") {
      if (event.target === search) { search.blur(); return; }
      if (list.selected.size) { list.selected.clear(); updateSelection(); }
      return;
    }
    if (typing || document.querySelector("dialog[open]")) return;
    const current = list.rows[list.cursor];
    const keys = {
      j: () => moveCursor(list.cursor + 1),
      k: () => moveCursor(list.cursor < 0 ? 0 : list.cursor - 1),
      o: () => current && open(current),
      Enter: () => current && !event.target.closest("a, button") && open(current),
      x: () => current && toggle(current.id),
      e: () => act("archive"),
      "#": () => act(inTrash() ? "delete_forever" : "delete"),
      r: () => act("read"),
      u: () => act("unread"),
      s: () => {
        const ids = targets();
        const anyUnstarred = list.rows.some((r) => ids.includes(r.id) && !r.flagged);
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
})();
