// Progressive enhancement of the changes panel: decide without reloading the page.
// Without this file every form still works (a POST answered with a redirect to the page).
"use strict";
(function () {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const notice = document.getElementById("notice");

  function say(text, isError) {
    notice.textContent = text;
    notice.hidden = false;
    notice.classList.toggle("error", Boolean(isError));
  }

  function update(card, change) {
    const decision = change.decision || "";
    card.dataset.decision = decision;
    card.querySelector('[data-role="decision"]').textContent = decision || "undecided";
    for (const form of card.querySelectorAll("form.decide")) {
      const action = form.dataset.action;
      const button = form.querySelector("button");
      button.disabled = decision === "revert" || decision === action ||
        (action === "revert" && !change.revertable);
    }
    const why = card.querySelector('[data-role="why"]');
    why.textContent = change.revert_unavailable && decision !== "revert"
      ? "Revert unavailable: " + change.revert_unavailable + "." : "";
  }

  document.addEventListener("submit", async function (ev) {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("decide")) return;
    ev.preventDefault();
    const card = form.closest("article.change");
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "X-CSRF-Token": token, "Accept": "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json();
      if (response.ok) {
        update(card, body);
        say(body.changed ? "Recorded: " + body.decision + " (" + body.path + ")."
                         : "Nothing to do: already " + body.decision + ".", false);
      } else {
        button.disabled = false;
        say(body.detail || ("Failed: HTTP " + response.status), true);
      }
    } catch (err) {
      button.disabled = false;
      say("Failed: " + err, true);
    }
  });
})();
