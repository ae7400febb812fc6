// "Test connection" buttons in the account admin: POST, then show the answer beside the button.
(function () {
  "use strict";

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function show(result, ok, text) {
    result.textContent = text;
    result.classList.remove("mailgate-ok", "mailgate-error");
    result.classList.add(ok ? "mailgate-ok" : "mailgate-error");
    result.style.color = ok ? "#1a7f37" : "#cf222e";
    result.dataset.state = ok ? "ok" : "error";
  }

  async function test(button) {
    var result = document.getElementById("test-connection-result-" + button.dataset.account);
    button.disabled = true;
    result.dataset.state = "pending";
    result.textContent = "Testing…";
    result.style.color = "";
    try {
      var response = await fetch(button.dataset.url, {
        method: "POST",
        headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) {
        show(result, false, "Request failed: HTTP " + response.status);
        return;
      }
      var body = await response.json();
      show(result, body.ok, (body.ok ? "✔ " : "✘ ") + body.message);
    } catch (err) {
      show(result, false, "Request failed: " + err.message);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(".mailgate-test-connection");
    if (!button) return;
    event.preventDefault();
    test(button);
  });
})();
