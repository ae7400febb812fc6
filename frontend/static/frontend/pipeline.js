/* Pipeline dashboard: counts per stage, throughput and the last 24 hours hour by hour, failing/dead
 * deliveries with retry, accounts' live state. */
"use strict";
(() => {
  const {api, el, formatDate, formatDateTime, debounce, status, connect} = Mailgate;
  const accountGeneration = new Map();  // account id -> fetches started; drops overtaken answers

  function countRows(counts, labels) {
    return Object.entries(counts).map(([name, n]) =>
      el("tr", {dataset: {status: name}, className: n ? "" : "zero"},
        el("th", {scope: "row"}, (labels && labels[name]) || name), el("td", {className: "count"}, n)));
  }

  /* "14:05" today, a full local date and time otherwise. */
  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toDateString() === new Date().toDateString()
      ? date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hourCycle: "h23"}) : formatDateTime(iso);
  }

  function deliveryStatus(d) {
    if (d.status === "retrying" && d.not_before) {
      return el("span", {}, `${d.status_label} at `, el("time", {datetime: d.not_before, title: formatDateTime(d.not_before)}, when(d.not_before)));
    }
    return d.status_label;
  }

  /* What came in and went out: the last hour (with its rate), the last day, and one column of bars
   * per hour, scaled to the busiest hour; each column says its figures to screen readers. */
  const FIGURES = ["received", "sent", "retried", "failed"];
  function showThroughput(t) {
    document.getElementById("throughput").replaceChildren(...FIGURES.map((name) =>
      el("tr", {dataset: {figure: name}},
        el("th", {scope: "row"}, t.labels[name]),
        el("td", {className: "last-hour"}, t.last_hour[name].toLocaleString()),
        el("td", {className: "rate"}, perMinute(t.last_hour[name])),
        el("td", {className: "last-day"}, t.last_day[name].toLocaleString()))));
    const top = Math.max(1, ...t.hours.map((h) => Math.max(h.received, h.sent, h.failed + h.retried)));
    const last = t.hours.length - 1;
    document.getElementById("history").replaceChildren(...t.hours.map((h, i) => {
      const hour = new Date(h.start).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
      const words = `${hour}${i === last ? " (this hour so far)" : ""}: ${h.received} received, ${h.sent} sent, ` +
                    `${h.failed} failed, ${h.retried} will retry`;
      const bar = (name, n) => {
        const node = el("span", {className: `bar fig-${name}`, dataset: {n}});
        node.style.height = `${(100 * n / top).toFixed(1)}%`;  // CSSOM, allowed where a style attribute is not
        return node;
      };
      return el("li", {dataset: {start: h.start}, className: i === last ? "now" : "", "aria-label": words, title: words},
        bar("received", h.received), bar("sent", h.sent), bar("failed", h.failed + h.retried),
        i % 6 === 0 ? el("span", {className: "tick", "aria-hidden": "true"}, hour) : null);
    }));
  }
  // A day of audit events is the page's costliest read: at most once every few seconds, however
  // busy the pipeline (the last call of a burst still runs, after the pause).
  const THROUGHPUT_EVERY_MS = 5000;
  let throughputAt = 0;
  let throughputTimer = null;
  function throughputSoon() {
    if (throughputTimer) return;
    throughputTimer = setTimeout(async () => {
      throughputTimer = null;
      throughputAt = Date.now();
      try { showThroughput(await api("/api/throughput/")); } catch (e) { status(e.message, true); }
    }, Math.max(0, throughputAt + THROUGHPUT_EVERY_MS - Date.now()));
  }
  function perMinute(n) {
    const rate = n / 60;
    return rate === 0 ? "0" : rate < 0.1 ? "< 0.1" : rate.toLocaleString([], {maximumFractionDigits: 1});
  }

  async function load() {
    const started = new Map(accountGeneration);
    throughputSoon();
    const [stats, failing, accounts] = await Promise.all([
      api("/api/stats/"), api("/api/deliveries/?status=failed,dead,retrying"), api("/api/accounts/")]);
    document.getElementById("message-counts").replaceChildren(...countRows(stats.messages, stats.labels && stats.labels.messages));
    document.getElementById("delivery-counts").replaceChildren(...countRows(stats.deliveries, stats.labels && stats.labels.deliveries));
    document.getElementById("failing").replaceChildren(...(failing.results.length ? failing.results.map((d) =>
      el("tr", {dataset: {id: d.id, status: d.status}},
        el("td", {"data-label": "Message"}, el("a", {href: `/messages/${d.message}/`}, d.subject || "(no subject)")),
        el("td", {"data-label": "Service"}, d.service), el("td", {"data-label": "To"}, d.address),
        el("td", {"data-label": "Status", className: "status"}, deliveryStatus(d)),
        el("td", {"data-label": "Attempts"}, d.attempts),
        el("td", {"data-label": "Last error", className: "error"}, d.last_error),
        el("td", {}, d.retryable ? el("button", {type: "button", className: "retry", onclick: () => retry(d.id),
                                                 title: d.status === "retrying" ? "Send now instead of waiting" : "Send again"},
                                      d.status === "retrying" ? "Retry now" : "Retry") : "")))
      : [el("tr", {}, el("td", {colspan: 7}, "Nothing failing or waiting to retry."))]));
    const tbody = document.getElementById("accounts");
    tbody.replaceChildren(...accounts.results.map((a) => {
      // A row re-read after an event while this page load was in flight is newer: keep it.
      const current = tbody.querySelector(`tr[data-id="${CSS.escape(String(a.id))}"]`);
      return current && accountGeneration.get(a.id) !== started.get(a.id) ? current : accountRow(a);
    }));
  }

  function idleText(idle) {
    if (!idle) return "not started";
    if (idle.connected) return `connected since ${formatDate(idle.idling_since)}`;
    return idle.leased ? "reconnecting" : "not running";
  }

  /* One state per account (the server's `health`, from its sync state and its push connection
   * together): never "Connected" beside a push connection that is reconnecting. */
  function accountRow(a) {
    const idle = a.idle;
    const health = a.health || {key: a.state, label: a.state_label, detail: ""};
    return el("tr", {dataset: {id: a.id, state: a.state, health: health.key, idle: idle ? String(idle.connected) : "none"}},
      el("td", {"data-label": "Account"}, `${a.display_name} <${a.email}>`),
      el("td", {"data-label": "State", className: `state state-${a.state}`}, health.label,
        health.retry_at ? ` (next try ${when(health.retry_at)})` : ""),
      el("td", {"data-label": "Push", className: "idle", title: idle && idle.lease_owner ? `lease: ${idle.lease_owner}` : ""}, idleText(idle)),
      el("td", {"data-label": "Last push", className: "last-push", title: idle && idle.last_push_at ? formatDateTime(idle.last_push_at) : ""}, idle ? formatDate(idle.last_push_at) : "—"),
      el("td", {"data-label": "Reconnects", className: "reconnects"}, idle ? idle.reconnect_count : "—"),
      el("td", {"data-label": "Last error", className: "error"}, (idle && idle.last_error) || a.last_error || ""));
  }

  /* account.status has two publishers with different payloads (imap/account_state.py: the
   * account's state; the IDLE manager: {"account_id", "idle": {...}}). Either way the event only
   * says which account changed: its row is re-read from the API, the truth. */
  async function refreshAccount(accountId) {
    const mine = (accountGeneration.get(accountId) || 0) + 1;
    accountGeneration.set(accountId, mine);
    let row = null;
    try {
      row = accountRow(await api(`/api/accounts/${accountId}/`));
    } catch (e) {
      if (e.status !== 404) { status(e.message, true); return; }
    }
    if (accountGeneration.get(accountId) !== mine) return;
    const tbody = document.getElementById("accounts");
    const old = tbody.querySelector(`tr[data-id="${CSS.escape(String(accountId))}"]`);
    if (old && row) old.replaceWith(row);
    else if (old) old.remove();          // deleted, or no longer shared with us
    else if (row) later();               // an account we have not listed yet: reload in order
  }

  async function retry(deliveryId) {
    status("Requeueing…");
    try {
      await api(`/api/deliveries/${deliveryId}/retry/`, {method: "POST", body: {}});
      status("Requeued.");
    } catch (e) { status(e.message, true); }
    await load();
  }

  const later = debounce(() => load().catch((e) => status(e.message, true)), 300);
  connect({
    onEvent(event) {
      const accountId = event.data && event.data.account_id;
      if (event.type === "account.status" && accountId) refreshAccount(accountId);
      else later();
    },
    resync: async () => later(),
  });
  load().catch((e) => status(e.message, true));
  // Quiet hours change nothing, yet the window moves on: a new hour's column, the old figures out.
  setInterval(later, 60_000);
})();
