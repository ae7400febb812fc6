/* Message page: "Related messages", the nearest messages in other threads with a one-line reason
 * (GET /api/messages/<id>/related/). Self-contained: it fills #related and needs nothing else. */
"use strict";
(() => {
  const {api, el, formatDate} = Mailgate;
  const list = document.getElementById("related");
  if (!list) return;
  async function load() {
    try {
      const {results} = await api(`/api/messages/${list.dataset.id}/related/`);
      if (!results.length) {
        list.replaceChildren(el("li", {className: "related-none"}, "No related messages."));
        return;
      }
      list.replaceChildren(...results.map((row) => el("li", {className: "related-item", dataset: {id: row.id}},
        el("a", {href: row.url}, row.subject || "(no subject)"), " ",
        el("small", {}, row.sender.name || row.sender.address || "—", " · ",
          formatDate(row.date || row.arrived_at)),
        el("div", {className: "related-reason"}, row.reason))));
    } catch (error) {
      list.replaceChildren(el("li", {}, "Related messages could not be loaded."));
    }
  }
  load();
})();
