/* An attached message's page: its sanitized HTML in the sandboxed frame sized to its content
 * (bodyframe.js), the HTML / Text switch, and remote images only when asked. */
"use strict";
(() => {
  const {status, connect} = Mailgate;
  const frame = document.getElementById("body-frame");
  const text = document.getElementById("text-body");
  connect({onEvent() {}, resync: async () => {}});  // the live badge, and the logout of other tabs
  if (!frame) return;
  BodyFrame.size(frame);
  BodyFrame.mount(frame, frame.dataset.src).catch((e) => status(`The message body did not load: ${e.message}`, true));

  const buttons = document.querySelectorAll(".views button.view");
  const remote = document.getElementById("load-remote");
  for (const button of buttons) {
    button.addEventListener("click", () => {
      for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
      const html = button.dataset.view === "html";
      frame.hidden = !html;
      if (text) text.hidden = html;
      if (remote) remote.hidden = !html;
    });
  }
  if (remote) {
    remote.addEventListener("click", async () => {
      remote.disabled = true;
      remote.textContent = "Images shown";
      document.getElementById("remote-note").hidden = true;
      try { await BodyFrame.mount(frame, `${frame.dataset.src}?remote=1`); } catch (e) { status(e.message, true); }
    });
  }
})();
