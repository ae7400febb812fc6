/* The accounts page: live sync progress per folder (the worker's "sync.progress" events, folder
 * and done/total), live account state ("account.status"), and a confirmation before Delete. */
"use strict";
(() => {
  const {api, connect, formatDate, localizeTimes} = Mailgate;
  const line = document.getElementById("acc-progress");
  const syncing = new Map();  // "account/folder" -> event data

  function card(id) { return document.querySelector(`.acc-card[data-account="${id}"]`); }

  function folderCell(data) {
    const row = card(data.account_id)?.querySelector(`tr[data-folder="${CSS.escape(data.folder)}"] .folder-state`);
    return row || null;
  }

  function showProgress(data) {
    const key = `${data.account_id}/${data.folder}`;
    const done = data.done >= data.total;
    if (done) syncing.delete(key); else syncing.set(key, data);
    const cell = folderCell(data);
    if (cell) {
      cell.textContent = done ? `synced: ${data.total.toLocaleString()} new message${data.total === 1 ? "" : "s"}`
                              : `syncing: ${data.done.toLocaleString()} of ${data.total.toLocaleString()}`;
      cell.dataset.done = done ? "1" : "0";
      if (!done) pollWhileSyncing();
    }
    const last = card(data.account_id)?.querySelector("[data-role=last-sync]");
    if (last && done) last.textContent = `Last sync: ${formatDate(new Date().toISOString())}`;
    line.hidden = syncing.size === 0;
    line.textContent = [...syncing.values()].map((d) => {
      const name = card(d.account_id)?.dataset.name || `account ${d.account_id}`;
      return `Syncing ${name} / ${d.folder}: ${d.done.toLocaleString()} of ${d.total.toLocaleString()}`;
    }).join(" · ");
  }

  function showStatus(data) {
    const node = card(data.account_id || data.id);
    if (!node) return;
    const state = node.querySelector("[data-role=state]");
    if (state && data.state_label) { state.textContent = data.state_label; state.className = `acc-state state-${data.state}`; }
    const error = node.querySelector("[data-role=error]");
    if (error) { error.textContent = data.last_error || ""; error.hidden = !data.last_error; }
  }

  // Events are hints: one can be missed (a gap in seq) or arrive late and be dropped (two workers
  // publish at once). So the API is asked which folders finished a sync (their last_synced_at
  // moved since the page saw it) and each account's state: after every gap or reconnect, and
  // every few seconds while a folder still shows "syncing", so none stays "syncing" for ever.
  let polling = null;
  async function refresh() {
    const {results} = await api("/api/accounts/");
    for (const account of results) {
      showStatus({account_id: account.id, state: account.state, state_label: account.state_label,
                  last_error: account.last_error});
      for (const folder of account.folders) {
        const cell = folderCell({account_id: account.id, folder: folder.name});
        if (!cell || !folder.last_synced_at || folder.last_synced_at === cell.dataset.lastSynced) continue;
        cell.dataset.lastSynced = folder.last_synced_at;
        if (cell.dataset.done !== "1") {
          cell.textContent = `synced ${formatDate(folder.last_synced_at)}`;
          cell.dataset.done = "1";
          syncing.delete(`${account.id}/${folder.name}`);
        }
      }
    }
    line.hidden = syncing.size === 0;
  }
  function pollWhileSyncing() {
    if (polling) return;
    polling = setInterval(async () => {
      if (!document.querySelector('.folder-state[data-done="0"]')) { clearInterval(polling); polling = null; return; }
      try { await refresh(); } catch (e) { /* the next round tries again */ }
    }, 3000);
  }

  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => { if (!window.confirm(button.dataset.confirm)) event.preventDefault(); });
  }
  // Over the cap the web server cuts the upload off with a bare 413: say so before sending it.
  for (const form of document.querySelectorAll("form[data-max-bytes]")) {
    form.addEventListener("submit", (event) => {
      const files = [...form.querySelector("input[type=file]").files];
      const size = files.reduce((sum, file) => sum + file.size, 0);
      const error = form.querySelector(".acc-field-error");
      error.hidden = size <= Number(form.dataset.maxBytes);
      if (!error.hidden) {
        event.preventDefault();
        error.textContent = `These files are ${(size / 1048576).toFixed(1)} MB together; the limit is ${form.dataset.maxText}. ` +
          "Import fewer at a time, or ask the operator to use manage.py import_mail.";
      }
    });
  }
  localizeTimes();
  pollWhileSyncing();  // a just-added account's folders wait for their first sync (data-done="0")
  connect({
    onEvent(event) {
      if (event.type === "sync.progress") showProgress(event.data || {});
      else if (event.type === "account.status") showStatus(event.data || {});
    },
    resync: refresh,
  });
})();
