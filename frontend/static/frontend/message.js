/* Message page: HTML/text views, remote images on request, actions, thread and live timeline. */
"use strict";
(() => {
  const {api, el, formatDate, formatDateTime, localizeText, debounce, status, connect} = Mailgate;
  const VERB = {delete: "Moved to Trash", move: "Moved"};
  const article = document.getElementById("message");
  const id = article.dataset.id;
  const frame = document.getElementById("body-frame");
  const text = document.getElementById("text-body");

  const showHtml = document.getElementById("show-html");
  const showText = document.getElementById("show-text");
  if (showHtml && showText) {
    showHtml.addEventListener("click", () => {
      frame.hidden = false; text.hidden = true;
      showHtml.setAttribute("aria-pressed", "true"); showText.setAttribute("aria-pressed", "false");
    });
    showText.addEventListener("click", () => {
      frame.hidden = true; text.hidden = false;
      showHtml.setAttribute("aria-pressed", "false"); showText.setAttribute("aria-pressed", "true");
    });
  }
  const remote = document.getElementById("load-remote");
  if (remote) {
    remote.addEventListener("click", () => {
      frame.src = `${article.dataset.bodyUrl}?remote=1`;
      remote.disabled = true;
      remote.textContent = "Remote images loaded";
    });
  }
  if (frame) {
    // Size the frame to its content is impossible without scripts inside it; give it room instead.
    frame.addEventListener("load", () => { frame.dataset.loaded = String(Number(frame.dataset.loaded || 0) + 1); });
    // The src is set only now: a frame that loaded before this script ran (its load event
    // already gone, and its opaque origin hides readyState) would never be counted.
    frame.src = frame.dataset.src;
  }

  document.querySelectorAll(".toolbar button[data-action]").forEach((button) => {
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
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
          location.assign("/");
          return;
        }
        await refreshMessage();
      } catch (e) { status(e.message, true); }
    });
  });

  async function refreshMessage() {
    const detail = await api(`/api/messages/${id}/`);
    article.dataset.deleted = String(detail.deleted);
    document.getElementById("deleted-banner").hidden = !detail.deleted;
    document.querySelector(".toolbar button[data-action=delete_forever]").hidden = !detail.deleted;
    document.getElementById("flags").textContent = detail.flags.join(" ");
    document.getElementById("status").textContent = detail.status_label +
      (detail.suppressed_reason ? ` (${detail.suppressed_reason})` : "");
  }

  async function loadThread() {
    const {results} = await api(`/api/messages/${id}/thread/`);
    document.getElementById("thread").replaceChildren(...results.map((row) =>
      el("li", {className: row.id === id ? "current" : ""},
        el("a", {href: row.url}, row.subject || "(no subject)"), " — ",
        row.sender.name || row.sender.address, ", ",
        el("time", {datetime: row.date || "", title: formatDateTime(row.date)}, formatDate(row.date)))));
  }

  async function loadTimeline() {
    const [{results: events}, {results: deliveries}] = await Promise.all([
      api(`/api/messages/${id}/events/`), api(`/api/deliveries/?message=${id}`)]);
    const timeline = document.getElementById("timeline");
    timeline.replaceChildren(...(events.length ? events.map((e) => el("tr", {},
      el("td", {}, el("time", {datetime: e.at}, formatDateTime(e.at))), el("td", {}, e.label),
      el("td", {}, e.delivery || ""), el("td", {}, localizeText(e.detail)))) :
      [el("tr", {}, el("td", {colspan: 4}, "No events yet."))]));
    document.getElementById("deliveries").replaceChildren(...(deliveries.length ? deliveries.map((d) => el("tr", {},
      el("td", {}, d.service), el("td", {}, d.address), el("td", {}, d.status_label), el("td", {}, d.attempts),
      el("td", {}, d.last_error))) : [el("tr", {}, el("td", {colspan: 5}, "No deliveries."))]));
  }

  const refreshAll = debounce(() => Promise.all([refreshMessage(), loadTimeline(), loadThread()]).catch(() => {}), 200);
  connect({
    onEvent(event) {
      const data = event.data || {};
      if (data.id === id || data.message === id || (data.ids || []).includes(id)) refreshAll();
    },
    resync: async () => refreshAll(),
  });
  // Server-rendered event details get the same local format as live ones.
  document.querySelectorAll("#timeline td:nth-child(4)").forEach((td) => { td.textContent = localizeText(td.textContent); });
  loadThread().catch((e) => status(e.message, true));
})();
