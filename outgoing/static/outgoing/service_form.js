/* Service admin form: only the selected kind's secret fields are shown, and the setting names
 * suggested are that kind's (data from outgoing/forms.py). Without JS every field stays visible. */
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const kind = document.getElementById("id_kind");
  if (!kind || !kind.dataset.secretKinds) return;
  const secrets = JSON.parse(kind.dataset.secretKinds);
  const allSecrets = new Set(Object.values(secrets).flat());
  const table = document.querySelector("table.settings-widget");
  const known = table ? JSON.parse(table.dataset.knownKeys || "{}") : {};
  const list = table ? document.getElementById(table.querySelector("input").getAttribute("list")) : null;

  function update() {
    const used = new Set(secrets[kind.value] || []);
    for (const name of allSecrets) {
      const row = document.querySelector(`.form-row.field-${CSS.escape(name)}`);
      if (row) row.hidden = !used.has(name);
    }
    if (list) {
      const keys = known[kind.value] || [...new Set(Object.values(known).flat())].sort();
      list.replaceChildren(...keys.map((key) => Object.assign(document.createElement("option"), {value: key})));
      const note = document.getElementById("settings-known-keys") || table.insertAdjacentElement(
        "afterend", Object.assign(document.createElement("div"), {id: "settings-known-keys", className: "help"}));
      note.textContent = kind.value ? `Settings for this kind: ${keys.join(", ")}.` : "Choose a kind to see its settings.";
    }
  }
  kind.addEventListener("change", update);
  update();
});
