/* Inbox, the page (after inbox-list.js and inbox-actions.js): filters, search and the folder
 * sidebar (a drawer on narrow screens) choosing what the list shows, the live connection (new
 * and changed rows, sync progress, counts), new mail on top with an "N new" pill when scrolled
 * away and announced to screen readers, and the start of it all. */
"use strict";
(() => {
  const {debounce, connect} = Mailgate;
  const {form, search, fromUrl, toUrl, forget, reload, refresh, restore, updateCounts, updateSidebar} = InboxList;
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

  /* ---- Filters, search, sidebar ---- */
  function filtersChanged(push) {
    clearPill();
    toUrl(push);
    forget();
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
  window.addEventListener("popstate", () => { fromUrl(); forget(false); reload(); });

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
        if (data.many) reloadSoon();
        else refresh(data.ids || [data.id]).then((added) => { if (event.type === "message.new") noteNew(added); });
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
