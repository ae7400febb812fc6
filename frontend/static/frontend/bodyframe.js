/* The body frame, shared by the reader and an attached message's page: the sanitized HTML goes
 * in as srcdoc under sandbox="allow-same-origin" without allow-scripts, so nothing in the mail
 * runs, yet the page can read the document's height and follow it (images loading, fonts, a
 * narrower window) with a ResizeObserver: no inner scrollbar, no blank box. */
"use strict";
const BodyFrame = (() => {
  const MAX_HEIGHT = 60000;  // px

  async function mount(target, url) {
    const response = await fetch(url, {credentials: "same-origin"});
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    target.srcdoc = await response.text();
  }

  function size(target) {
    target.addEventListener("load", () => {
      target.dataset.loaded = String(Number(target.dataset.loaded || 0) + 1);
      const doc = target.contentDocument;
      if (!doc || !doc.documentElement) return;
      const fit = () => {
        // Capped: a mail sized in vh units would otherwise grow with its frame without end.
        const height = Math.min(Math.ceil(doc.documentElement.getBoundingClientRect().height), MAX_HEIGHT);
        target.style.height = `${Math.max(height, 24)}px`;
        target.dataset.height = String(height);
      };
      new ResizeObserver(fit).observe(doc.documentElement);
      for (const img of doc.images) img.addEventListener("load", fit);
      fit();
    });
  }

  return {mount, size};
})();
