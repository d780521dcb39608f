// The gallery's small actions that need a script: "Copy prompt". Without JavaScript the button is not shown
// (style.css shows it under html.js); everything else (Download all, Make again, Delete) is a plain link.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function promptOf(button) {
    var section = document.getElementById(button.getAttribute("data-copy-for"));
    var el = section && section.querySelector(".prompt");
    return el ? el.textContent.trim() : "";
  }

  function fallbackCopy(text) {
    // Outside a secure context (http:// on another host) there is no navigator.clipboard.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function say(button, text) {
    var before = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", before);
    button.textContent = text;
    window.setTimeout(function () { button.textContent = before; }, 2000);
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("button.copy-prompt") : null;
    if (!button) { return; }
    var text = promptOf(button);
    var copy = navigator.clipboard && window.isSecureContext
      ? navigator.clipboard.writeText(text) : fallbackCopy(text);
    copy.then(function () {
      say(button, "Copied");
      var section = document.getElementById(button.getAttribute("data-copy-for"));
      window.aigenCopied(section && section.getAttribute("data-id"), "gallery");
    }, function () { say(button, "Could not copy"); });
  });

  // The copy is the browser's; the gallery records it (an event, as for every action). Best effort: a lost
  // record never gets in the user's way.
  window.aigenCopied = function (genId, where) {
    var token = document.querySelector('input[name="csrf_token"]');
    if (!genId || !token || !window.fetch) { return; }
    fetch("/g/" + encodeURIComponent(genId) + "/copied?from=" + where, {
      method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": token.value}
    }).catch(function () { /* not recorded */ });
  };
})();
