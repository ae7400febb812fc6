/* The reader: back/newer/older, HTML/Text/Markdown/Original views, the body frame sized to its
 * content, remote images on request, mark-read on open, actions, the conversation's folded
 * messages, and the live relay timeline. */
"use strict";
(() => {
  const {api, el, formatDateTime, localizeText, debounce, status, connect} = Mailgate;
  const VERB = {delete: "Moved to Trash", move: "Moved"};
  const article = document.getElementById("message");
  const id = article.dataset.id;
  const frame = document.getElementById("body-frame");
  const actions = document.getElementById("reader-actions");

  /* Back to the list where the reader left it. Steps through this reader (newer/older) are
   * counted in sessionStorage, so Back can go that many steps back in history and land on the
   * list itself, scrolled where it was, instead of a fresh copy of it at the top. */
  const back = document.getElementById("back");
  const origin = sessionStorage.getItem("mailgate.reader.list");
  let depth = Number(sessionStorage.getItem("mailgate.reader.depth") || 0);
  const referrer = (() => { try { const u = new URL(document.referrer); return u.origin === location.origin ? u : null; } catch (e) { return null; } })();
  const fromList = referrer && (referrer.pathname === "/" || referrer.pathname === "/inbox/");
  if (fromList && referrer.pathname + referrer.search === back.dataset.back) {
    depth = 0;
    sessionStorage.setItem("mailgate.reader.list", back.dataset.back);
  } else if (!(referrer && referrer.pathname.startsWith("/messages/")) || origin !== back.dataset.back) {
    depth = -1;  // not reached from the list in this tab: Back loads it afresh
  }
  sessionStorage.setItem("mailgate.reader.depth", String(depth));
  for (const link of document.querySelectorAll("#newer, #older")) {
    link.addEventListener("click", () => { if (depth >= 0) sessionStorage.setItem("mailgate.reader.depth", String(depth + 1)); });
  }
  back.addEventListener("click", (event) => {
    if (depth >= 0 && history.length > depth + 1) {
      event.preventDefault();
      history.go(-(depth + 1));
    }
  });

  /* The body frame (bodyframe.js): sized to its content. */
  const mountFrame = BodyFrame.mount, sizeFrame = BodyFrame.size;
  if (frame) {
    sizeFrame(frame);
    mountFrame(frame, frame.dataset.src).catch((e) => status(`The message body did not load: ${e.message}`, true));
  }

  for (const button of document.querySelectorAll("#load-remote, #load-remote-2")) {
    button.addEventListener("click", async () => {
      for (const b of document.querySelectorAll("#load-remote, #load-remote-2")) b.disabled = true;
      const note = document.getElementById("remote-note");
      if (note) note.hidden = true;
      document.getElementById("load-remote").textContent = "Images shown";
      try { await mountFrame(frame, `${article.dataset.bodyUrl}?remote=1`); } catch (e) { status(e.message, true); }
    });
  }

  /* HTML / Text / Markdown / Original: one view at a time; Original is fetched when first shown. */
  const viewButtons = document.querySelectorAll(".reader-message .views button.view");
  for (const button of viewButtons) {
    button.addEventListener("click", async () => {
      const view = button.dataset.view;
      for (const b of viewButtons) b.setAttribute("aria-pressed", String(b === button));
      if (frame) frame.hidden = view !== "html";
      for (const block of document.querySelectorAll(".reader-message .body-view")) block.hidden = block.dataset.view !== view;
      const remote = document.getElementById("load-remote");
      if (remote) remote.hidden = view !== "html";
      const raw = document.getElementById("raw-body");
      if (view === "original" && raw && !raw.dataset.loaded) {
        raw.textContent = "Loading the original…";
        try {
          const response = await fetch(raw.dataset.src, {credentials: "same-origin"});
          if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
          raw.textContent = await response.text();
          raw.dataset.loaded = "1";
        } catch (e) { raw.textContent = `The original could not be loaded (${e.message}).`; }
      }
    });
  }

  /* The conversation's other messages: their body is loaded when first unfolded. */
  function unfold(details) {
    if (details.dataset.mounted) return;
    details.dataset.mounted = "1";
    const body = details.querySelector(".conv-body");
    if (details.dataset.hasHtml === "true") {
      const inner = el("iframe", {className: "body-frame", title: "Message body",
                                  sandbox: "allow-same-origin allow-popups allow-popups-to-escape-sandbox",
                                  referrerpolicy: "no-referrer"});
      body.replaceChildren(inner);
      sizeFrame(inner);
      mountFrame(inner, details.dataset.bodyUrl).catch((e) => body.replaceChildren(`The body did not load: ${e.message}`));
    } else {
      const text = body.querySelector("pre");
      if (text.textContent.trim()) text.hidden = false;
      else body.replaceChildren(el("p", {className: "empty-body"}, "This message has no text."));
    }
  }
  for (const details of document.querySelectorAll("details.conv-fold")) {
    if (details.open) unfold(details);
    details.addEventListener("toggle", () => { if (details.open) unfold(details); });
  }
  const current = document.querySelector(".conv-item.current");
  if (current && document.querySelector(".conv-item")) {
    // Stop below the sticky Back/Newer/Older bar (two rows on a phone), not under it: the opened
    // message's subject and sender are what the reader came for.
    const nav = document.querySelector(".reader-nav");
    current.style.scrollMarginTop = `${(nav ? nav.offsetHeight : 0) + 8}px`;
    current.scrollIntoView({block: "start"});
  }

  /* Keys, as in the list: j/k older/newer, Escape back to the list, r/u read/unread, s star,
   * # delete. Not while typing, and not with Ctrl/Alt/Meta (the browser's own shortcuts). */
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.altKey || event.metaKey || event.defaultPrevented) return;
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
    const go = (selector) => { const link = document.querySelector(selector); if (link) link.click(); };
    const press = (action) => {
      const button = actions.querySelector(`button[data-action=${action}]`);
      if (button && !button.hidden) button.click();
    };
    const keys = {j: () => go("#older"), k: () => go("#newer"), Escape: () => back.click(),
                  r: () => press("read"), u: () => press("unread"), "#": () => press("delete"),
                  s: () => (actions.querySelector("button[data-action=flag]").hidden ? press("unflag") : press("flag"))};
    if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
  });

  /* "will retry at 14:05": a time of day today, a date and time otherwise. */
  function localizeReaderTimes() {
    for (const node of document.querySelectorAll("time[data-reader-format=time]")) {
      const date = new Date(node.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) continue;
      const today = date.toDateString() === new Date().toDateString();
      node.textContent = today ? date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hourCycle: "h23"})
                               : formatDateTime(date.toISOString());
      node.title = formatDateTime(date.toISOString());
    }
  }

  async function act(action) {
    const body = {action, ids: [id]};
    if (action === "delete_forever") {
      if (!window.confirm("Delete this message for good? This cannot be undone.")) return;
      body.confirm = true;
    }
    status("Working…");
    try {
      const result = await api("/api/messages/batch/", {method: "POST", body});
      status(result.errors.length ? result.errors[0].error : "Done.", result.errors.length > 0);
      if (!result.errors.length && (action === "delete" || action === "delete_forever")) {
        // Deleted mail leaves the page too; the list offers the Undo for the rest of its time.
        if (result.undo && result.undo.length) {
          sessionStorage.setItem("mailgate.undo", JSON.stringify(
            {text: `${VERB[action]} (1).`, steps: result.undo, until: Date.now() + 8000}));
        }
        location.assign(back.dataset.back || "/");
        return;
      }
      await refreshMessage();
    } catch (e) { status(e.message, true); }
  }
  for (const button of actions.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }

  function showActions(detail) {
    const show = {read: detail.unread, unread: !detail.unread, flag: !detail.flagged, unflag: detail.flagged,
                  delete: !detail.deleted, delete_forever: detail.deleted};
    for (const button of actions.querySelectorAll("button[data-action]")) button.hidden = !show[button.dataset.action];
  }

  async function refreshMessage() {
    const detail = await api(`/api/messages/${id}/`);
    article.dataset.deleted = String(detail.deleted);
    article.dataset.unread = String(detail.unread);
    document.getElementById("deleted-banner").hidden = !detail.deleted;
    showActions(detail);
    document.getElementById("flags").textContent = detail.flag_words.join(", ");
    document.getElementById("status").textContent = detail.status_label;
  }

  async function loadTimeline() {
    const [{results: events}, {results: deliveries}] = await Promise.all([
      api(`/api/messages/${id}/events/`), api(`/api/deliveries/?message=${id}`)]);
    const timeline = document.getElementById("timeline");
    timeline.replaceChildren(...(events.length ? events.map((e) => el("tr", {},
      el("td", {}, el("time", {datetime: e.at}, formatDateTime(e.at))), el("td", {"data-label": "Step"}, e.label),
      el("td", {"data-label": "Delivery"}, e.delivery_label || ""), el("td", {"data-label": "Detail"}, localizeText(e.detail)))) :
      [el("tr", {}, el("td", {colspan: 4}, "No events yet."))]));
    document.getElementById("deliveries").replaceChildren(...(deliveries.length ? deliveries.map((d) => el("tr", {},
      el("td", {"data-label": "Service"}, d.service), el("td", {"data-label": "To"}, d.address),
      el("td", {"data-label": "Status"}, d.status_label, d.status === "retrying" && d.not_before
        ? [" at ", el("time", {datetime: d.not_before, "data-reader-format": "time"})] : []),
      el("td", {"data-label": "Attempts"}, d.attempts), el("td", {"data-label": "Last error"}, d.last_error))) : [el("tr", {}, el("td", {colspan: 5}, "No deliveries."))]));
    localizeReaderTimes();
  }

  const refreshAll = debounce(() => Promise.all([refreshMessage(), loadTimeline()]).catch(() => {}), 200);
  /* A new message in this conversation: said, with a link that opens the conversation again. */
  const shown = new Set([id, ...[...document.querySelectorAll(".conv-item")].map((item) => item.dataset.id)]);
  function threadNews(data) {
    const thread = article.dataset.thread;
    if (!thread || String(data.thread) !== thread || !data.id || shown.has(data.id)) return;
    const news = document.getElementById("thread-news");
    document.getElementById("thread-news-link").href = `/messages/${data.id}/?back=${encodeURIComponent(back.dataset.back)}`;
    news.hidden = false;
  }
  connect({
    onEvent(event) {
      const data = event.data || {};
      if (data.id === id || data.message === id || (data.ids || []).includes(id)) refreshAll();
      if (event.type === "message.new" || event.type === "message.updated") threadNews(data);
    },
    resync: async () => refreshAll(),
  });
  // Server-rendered event details get the same local format as live ones.
  document.querySelectorAll("#timeline td:nth-child(4)").forEach((td) => { td.textContent = localizeText(td.textContent); });
  localizeReaderTimes();

  // Opening a message reads it: written back to the server like the Mark read button.
  if (article.dataset.unread === "true") {
    api("/api/messages/batch/", {method: "POST", body: {action: "read", ids: [id]}})
      .then((result) => {
        if (result.errors.length) status(`Could not mark it read: ${result.errors[0].error}`, true);
        return refreshMessage();
      })
      .catch((e) => status(`Could not mark it read: ${e.message}`, true));
  }
})();
