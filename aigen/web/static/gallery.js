// Live refresh for work in progress: while a section on the page is
// Processing, ask the server every few seconds how far it has got; when it
// is done, swap in that section's finished content (videos and images) and
// stop asking. On the gallery nothing else is reloaded, so a video playing
// in another section keeps playing.
(function () {
  "use strict";
  var interval = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 3000;

  function pending() {
    return Array.prototype.slice.call(
      document.querySelectorAll('section.generation[data-status="Processing"]'));
  }

  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      });
  }

  function update(section) {
    var id = section.getAttribute("data-id");
    return getJSON("/api/generations/" + id + "/status").then(function (d) {
      var bar = section.querySelector("progress");
      var text = section.querySelector(".progress-text");
      if (bar) { bar.max = d.total; bar.value = d.done; }
      if (text) { text.textContent = d.done + " of " + d.total; }
      if (d.status === "Processing") { return; }
      if (section.getAttribute("data-full") === "1") {
        // A generation's own page: its details table changed too.
        window.location.reload();
        return;
      }
      return fetch("/g/" + id + "/section", {credentials: "same-origin"})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
        .then(function (html) {
          var tpl = document.createElement("template");
          tpl.innerHTML = html.trim();
          var fresh = tpl.content.querySelector("section.generation");
          if (fresh) { section.replaceWith(fresh); }
        });
    }).catch(function () { /* try again at the next tick */ });
  }

  function tick() {
    var sections = pending();
    if (!sections.length) { return; }  // all done: stop polling
    var work = document.hidden ? Promise.resolve() : Promise.all(sections.map(update));
    work.then(function () {
      if (pending().length) { window.setTimeout(tick, interval); }
    });
  }

  if (pending().length) { window.setTimeout(tick, interval); }
})();
