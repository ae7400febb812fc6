/* Shared by every page: JSON API calls and the live event socket.
 *
 * The socket is a hint, the API the truth: every event carries a per-user `seq`; when one is
 * skipped, or the socket reconnects, the page's resync() re-fetches from the API. */
"use strict";
const Mailgate = (() => {
  const csrf = document.querySelector("meta[name=csrf-token]").content;

  async function api(url, options = {}) {
    const init = {credentials: "same-origin", headers: {"Accept": "application/json"}, ...options};
    if (init.body !== undefined && typeof init.body !== "string") {
      init.body = JSON.stringify(init.body);
      init.headers["Content-Type"] = "application/json";
    }
    if (init.method && init.method !== "GET") init.headers["X-CSRFToken"] = csrf;
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    // 401: the session is gone (logged out elsewhere, expired). A 403 without our JSON is
    // Django's CSRF page, which a logged-out session's POST gets: ask once whether we are signed in.
    if (response.status === 401 || (response.status === 403 && data === null && url !== SESSION_PROBE)) {
      if (response.status === 401 || await signedOut()) toLogin();
    }
    if (!response.ok && response.status !== 207) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  /* An expired session sends the user to the login page, back here afterwards. */
  const SESSION_PROBE = "/api/seq/";
  let leaving = false;
  function toLogin() {
    if (leaving) return;
    leaving = true;
    const login = document.body.dataset.loginUrl || "/accounts/login/";
    location.assign(`${login}?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  async function signedOut() {
    try {
      const response = await fetch(SESSION_PROBE, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      return response.status === 401;
    } catch (e) { return false; }  // the server is down, not the session
  }
  async function checkSession() { if (await signedOut()) toLogin(); }
  // Logging out in one tab takes the others to the login page too (the storage event reaches
  // the other tabs of this origin); coming back to a tab checks the session.
  document.addEventListener("submit", (event) => {
    if (event.target.matches("form.logout")) localStorage.setItem("mailgate.logout", String(Date.now()));
  });
  window.addEventListener("storage", (event) => { if (event.key === "mailgate.logout") checkSession(); });
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") checkSession(); });

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /* One date format everywhere, always in the reader's own time zone (the browser's):
   * formatDate for lists (today: "14:05"; this year: "Dec 3"; older: "Dec 3, 2024"),
   * formatDateTime where the exact moment matters ("Thu, Dec 3, 2026, 14:05:09 EST", zone shown). */
  const TIME = {hour: "2-digit", minute: "2-digit", hourCycle: "h23"};
  // Built once: toLocale*String(options) builds a new formatter on every call, which made each
  // list row cost milliseconds (a virtual list formats rows on every scroll).
  const FORMAT = {
    time: new Intl.DateTimeFormat([], TIME),
    day: new Intl.DateTimeFormat([], {month: "short", day: "numeric"}),
    dayYear: new Intl.DateTimeFormat([], {month: "short", day: "numeric", year: "numeric"}),
    // A phone's date column has room for about seven characters: "7/10/12", not "Jul 10, 2012".
    dayYearShort: new Intl.DateTimeFormat([], {month: "numeric", day: "numeric", year: "2-digit"}),
    full: new Intl.DateTimeFormat([], {weekday: "short", year: "numeric", month: "short", day: "numeric",
                                       ...TIME, second: "2-digit", timeZoneName: "short"}),
  };
  const NARROW = window.matchMedia("(max-width: 760px)");  // the breakpoint of mailgate.css
  // Crossing it changes how older dates read: redraw the ones on the page (lists redraw their own).
  NARROW.addEventListener("change", () => localizeTimes());
  function formatDate(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "—";
    const now = new Date();
    if (date.toDateString() === now.toDateString()) return FORMAT.time.format(date);
    if (date.getFullYear() === now.getFullYear()) return FORMAT.day.format(date);
    return (NARROW.matches ? FORMAT.dayYearShort : FORMAT.dayYear).format(date);
  }

  function formatDateTime(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "—";
    return FORMAT.full.format(date);
  }

  /* Server-rendered <time datetime=... data-format="date|datetime"> in the reader's time zone. */
  function localizeTimes(root = document) {
    for (const node of root.querySelectorAll("time[datetime][data-format]")) {
      const iso = node.getAttribute("datetime");
      node.textContent = node.dataset.format === "date" ? formatDate(iso) : formatDateTime(iso);
      node.title = formatDateTime(iso);
    }
  }

  // Timestamps the pipeline writes into event details ("at 2026-12-03 18:59:26+0000").
  const STAMP = /\b(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)\b/g;
  function localizeText(text) {
    return (text || "").replace(STAMP, (whole, day, time, zone) => {
      const offset = zone === "Z" ? "Z" : zone.replace(/^([+-]\d\d)(\d\d)$/, "$1:$2");
      const date = new Date(`${day}T${time}${offset}`);
      return Number.isNaN(date.getTime()) ? whole : formatDateTime(date.toISOString());
    });
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  function status(text, isError = false) {
    const node = document.getElementById("action-status");
    if (!node) return;
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  /* connect({onEvent(event), resync()}): one socket per page, reconnecting with backoff. */
  function connect(handlers) {
    let lastSeq = Number(document.body.dataset.seq || 0);
    let delay = 500;
    let opened = false;
    const indicator = document.getElementById("live-status");

    // Shown in words too, not by colour alone.
    const WORDS = {open: "live", closed: "offline", connecting: "connecting", reconnecting: "reconnecting…"};
    function setState(state) {
      document.body.dataset.ws = state;
      if (indicator) {
        indicator.dataset.state = state;
        indicator.textContent = WORDS[state] || state;
        indicator.title = state === "open" ? "Live updates: on" : "Live updates: off, reconnecting";
      }
    }

    async function resync() {
      try {
        const {seq} = await api("/api/seq/");
        lastSeq = Math.max(lastSeq, seq);
      } catch (e) { /* the next event or reconnect tries again */ }
      await handlers.resync();
    }

    function open() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      if (leaving) return;
      const socket = new WebSocket(scheme + location.host + "/ws/events/");
      socket.onopen = async () => {
        delay = 500;
        setState("open");
        if (opened) { await resync(); return; }
        opened = true;
        // Events published between rendering this page and now were sent to nobody.
        try {
          const {seq} = await api("/api/seq/");
          if (seq !== lastSeq) { lastSeq = seq; await handlers.resync(); }
        } catch (e) { /* ignore: resync on the next gap */ }
      };
      socket.onmessage = (message) => {
        let event;
        try { event = JSON.parse(message.data); } catch (e) { return; }
        const seq = Number(event.seq);
        if (Number.isFinite(seq) && seq > 0) {
          if (seq > lastSeq + 1) {
            lastSeq = seq;
            resync();
            return;
          }
          lastSeq = Math.max(lastSeq, seq);
        }
        handlers.onEvent(event);
      };
      socket.onclose = async () => {
        // Shown on the page ("reconnecting…") until it is back (or Redis behind it is).
        setState("reconnecting");
        // A refused handshake, or a socket dropped, is often a session that ended: no reconnect
        // storm, the login page instead. Otherwise (server restarting) back off and try again.
        if (await signedOut()) { toLogin(); return; }
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    open();
  }

  document.addEventListener("DOMContentLoaded", () => localizeTimes());
  return {api, el, toLogin, formatDate, formatDateTime, localizeTimes, localizeText, debounce, status, connect,
          narrow: NARROW};
})();
