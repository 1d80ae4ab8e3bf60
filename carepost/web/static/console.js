/* carepost console: progressive enhancement only. Every page works without this file;
   it adds copy buttons, shows HTMX notices (HX-Trigger "carepost:notice") in the
   page's live region and asks before a page with unsaved edits is left. No inline
   scripts anywhere: the CSP forbids them. */
(function () {
  "use strict";

  function textOf(target) {
    if (target.matches("ol, ul")) {
      return Array.prototype.map
        .call(target.querySelectorAll("li"), function (li) { return li.textContent.trim(); })
        .join("\n");
    }
    return target.textContent.trim();
  }

  function enableCopyButtons(root) {
    if (!navigator.clipboard || !root.querySelectorAll) { return; }
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      if (button.dataset.copyReady) { return; }
      button.dataset.copyReady = "1";
      button.hidden = false;
      button.addEventListener("click", function () {
        var target = document.querySelector(button.dataset.copy);
        if (!target) { return; }
        var label = button.textContent;
        navigator.clipboard.writeText(textOf(target)).then(function () {
          button.textContent = "Copied";
          window.setTimeout(function () { button.textContent = label; }, 2000);
        });
      });
    });
  }

  function announce(message, kind) {
    var region = document.getElementById("messages");
    if (!region || !message) { return; }
    var box = document.createElement("div");
    box.className = "notice notice--" + (kind || "success");
    var paragraph = document.createElement("p");
    paragraph.textContent = message;
    box.appendChild(paragraph);
    region.replaceChildren(box);
  }

  // A page holding edits not yet saved (the workflow builder marks them with
  // <input name="dirty" value="1">) asks before it is left, reloaded or closed.
  // Submitting a form of the page (save the draft, activate, review) leaves it on
  // purpose; an HTMX request does not leave it, so the guard comes back after one.
  var leaving = false;
  document.addEventListener("submit", function () { leaving = true; });
  document.addEventListener("htmx:afterRequest", function () { leaving = false; });
  window.addEventListener("beforeunload", function (event) {
    if (leaving || !document.querySelector('input[name="dirty"][value="1"]')) { return; }
    event.preventDefault();
    event.returnValue = "";
  });

  document.addEventListener("DOMContentLoaded", function () { enableCopyButtons(document); });
  document.addEventListener("htmx:load", function (event) { enableCopyButtons(event.detail.elt); });
  document.addEventListener("carepost:notice", function (event) {
    var detail = event.detail || {};
    announce(typeof detail === "string" ? detail : detail.value);
  });
  document.addEventListener("htmx:sendError", function () {
    announce("carepost could not be reached. Check your connection and try again.", "error");
  });
})();
