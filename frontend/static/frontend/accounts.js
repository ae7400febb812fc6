/* The accounts page: live sync progress per folder (the worker's "sync.progress" events, folder
 * and done/total), live account state ("account.status"), and a confirmation before Delete. */
"use strict";
(() => {
  const {connect, localizeTimes} = Mailgate;
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
      cell.textContent = done ? `synced: ${data.total.toLocaleString()} messages`
                              : `syncing: ${data.done.toLocaleString()} of ${data.total.toLocaleString()}`;
      cell.dataset.done = done ? "1" : "0";
    }
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

  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => { if (!window.confirm(button.dataset.confirm)) event.preventDefault(); });
  }
  localizeTimes();
  connect({
    onEvent(event) {
      if (event.type === "sync.progress") showProgress(event.data || {});
      else if (event.type === "account.status") showStatus(event.data || {});
    },
    resync: async () => {},
  });
})();
