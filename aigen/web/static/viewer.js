// The viewer: a tile's link (the one to its file) opens the file large in a dialog on this page, with
// previous/next (buttons, arrow keys, a swipe), Esc or the close button to go back (focus returns to the
// tile), the prompt with a copy button, the file's details and Download. Each file has its own URL:
// /g/ID#image-3 on a generation's page, /#g-ID-image-3 on the gallery; opening such a URL opens the viewer.
// Without JavaScript the same links open the file itself. Everything is built with DOM calls and
// textContent: no markup is made from data, and nothing inline (the page's CSP forbids it).
(function () {
  "use strict";
  var own = document.querySelector('section.generation[data-full="1"]');  // a generation's own page
  var HASH = /^#(?:g-([0-9a-f]{4,32})-)?(image|video)-([0-9]{1,4})$/;
  var dialog = null;
  var ui = {};
  var current = null;   // the tile (figure) shown
  var pushed = false;   // the viewer added a history entry, which closing takes back
  var expectPop = false;    // closing went back in history: the popstate that follows is ours
  var skipHistory = false;  // closing because history moved: leave history alone

  function tiles() { return Array.from(document.querySelectorAll("figure[data-asset]")); }
  function sectionOf(fig) { return fig.closest("section.generation"); }
  function nameOf(fig) { return fig.getAttribute("data-kind") + "-" + fig.getAttribute("data-index"); }
  function hashOf(fig) {
    return own ? "#" + nameOf(fig) : "#g-" + sectionOf(fig).getAttribute("data-id") + "-" + nameOf(fig);
  }
  function linkOf(fig) {
    var src = fig.getAttribute("data-src");
    return Array.from(fig.querySelectorAll("a[href]")).filter(function (a) {
      return a.getAttribute("href") === src;
    })[0] || null;
  }
  function human(n) {
    n = Number(n);
    if (!n) { return ""; }
    var units = ["B", "KB", "MB", "GB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function button(cls, label, text) {
    var b = el("button", cls, text);
    b.type = "button";
    b.setAttribute("aria-label", label);
    return b;
  }

  function build() {
    dialog = el("dialog", "viewer");
    dialog.setAttribute("aria-labelledby", "viewer-title");
    var bar = el("div", "viewer-bar");
    ui.title = el("h2", "viewer-title");
    ui.title.id = "viewer-title";
    ui.prev = button("viewer-prev", "Previous", "\u2039");
    ui.next = button("viewer-next", "Next", "\u203a");
    ui.close = button("viewer-close", "Close", "\u00d7");
    bar.append(ui.title, ui.prev, ui.next, ui.close);
    ui.stage = el("div", "viewer-stage");
    var info = el("div", "viewer-info");
    ui.prompt = el("p", "viewer-prompt");
    var row = el("div", "viewer-actions");
    ui.copy = el("button", "viewer-copy link-button", "Copy prompt");
    ui.copy.type = "button";
    ui.copied = el("span", "viewer-copied");
    ui.copied.setAttribute("role", "status");
    ui.download = el("a", "viewer-download link-button", "Download");
    ui.download.setAttribute("download", "");
    ui.permalink = el("a", "viewer-permalink", "Link to this file");
    row.append(ui.copy, ui.download, ui.permalink, ui.copied);
    ui.facts = el("dl", "viewer-facts facts");
    info.append(ui.prompt, row, ui.facts);
    dialog.append(bar, ui.stage, info);
    document.body.appendChild(dialog);

    ui.prev.addEventListener("click", function () { step(-1); });
    ui.next.addEventListener("click", function () { step(1); });
    ui.close.addEventListener("click", function () { dialog.close(); });
    ui.copy.addEventListener("click", copyPrompt);
    dialog.addEventListener("close", closed);
    dialog.addEventListener("click", function (e) {
      if (e.target === dialog) { dialog.close(); }  // a click on the backdrop
    });
    // On the document: focus may be on nothing in particular (a button that just became disabled).
    document.addEventListener("keydown", function (e) {
      if (!dialog.open || e.altKey || e.ctrlKey || e.metaKey) { return; }
      // A focused video seeks with the arrows: leave them to it.
      if (e.target && e.target.tagName === "VIDEO") { return; }
      if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
      if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
    });
    var start = null;
    ui.stage.addEventListener("pointerdown", function (e) {
      if (e.pointerType !== "mouse") { start = {x: e.clientX, y: e.clientY}; }
    });
    ui.stage.addEventListener("pointerup", function (e) {
      if (!start) { return; }
      var dx = e.clientX - start.x;
      var dy = e.clientY - start.y;
      start = null;
      if (Math.abs(dx) > 50 && Math.abs(dx) > 2 * Math.abs(dy)) { step(dx < 0 ? 1 : -1); }
    });
    ui.stage.addEventListener("pointercancel", function () { start = null; });
  }

  function copyPrompt() {
    var text = ui.prompt.textContent;
    var record = function () {
      var sec = current ? sectionOf(current) : null;
      if (window.aigenCopied && sec) { window.aigenCopied(sec.getAttribute("data-id"), "viewer"); }
    };
    var done = function () { ui.copied.textContent = "Copied."; record(); };
    var fallback = function () {
      // Off a secure origin (plain http beyond localhost) there is no clipboard API.
      var area = el("textarea", "visually-hidden");
      area.value = text;
      dialog.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (err) { ok = false; }
      area.remove();
      ui.copied.textContent = ok ? "Copied." : "Select the prompt and copy it.";
      if (ok) { record(); }
      ui.copy.focus();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
  }

  function fact(dl, name, value) {
    if (value === "" || value === null || value === undefined) { return; }
    dl.append(el("dt", null, name), el("dd", null, String(value)));
  }

  function show(fig) {
    current = fig;
    var all = tiles();
    var i = all.indexOf(fig);
    var kind = fig.getAttribute("data-kind");
    var index = fig.getAttribute("data-index");
    var sec = sectionOf(fig);
    var prompt = sec.querySelector(".prompt").textContent.trim();
    var label = (kind === "video" ? "Video " : "Image ") + index;
    ui.title.textContent = label + " \u00b7 " + (i + 1) + " of " + all.length;
    var had = document.activeElement;
    ui.prev.disabled = i <= 0;
    ui.next.disabled = i >= all.length - 1;
    // A button that becomes disabled drops the focus: hand it to the other one.
    if (had === ui.next && ui.next.disabled) { (ui.prev.disabled ? ui.close : ui.prev).focus(); }
    if (had === ui.prev && ui.prev.disabled) { (ui.next.disabled ? ui.close : ui.next).focus(); }

    var old = ui.stage.querySelector("video");
    if (old) { old.pause(); }
    ui.stage.textContent = "";
    var media;
    if (kind === "video") {
      media = el("video");
      media.controls = true;
      media.playsInline = true;
      media.preload = "auto";
      var poster = fig.getAttribute("data-poster");
      if (poster) { media.poster = poster; }
      media.setAttribute("aria-label", label + ": " + prompt);
      media.src = fig.getAttribute("data-src");
    } else {
      media = el("img");
      media.alt = label + ": " + prompt;
      media.src = fig.getAttribute("data-src");
    }
    var w = fig.getAttribute("data-width");
    var h = fig.getAttribute("data-height");
    if (w && h) { media.width = Number(w); media.height = Number(h); }
    ui.stage.appendChild(media);
    if (kind === "video") {
      var p = media.play();
      if (p && p.catch) { p.catch(function () { /* autoplay refused: the controls are there */ }); }
    }

    ui.prompt.textContent = prompt;
    ui.copied.textContent = "";
    var name = fig.getAttribute("data-name") || "";
    var ext = name.indexOf(".") >= 0 ? name.split(".").pop().toUpperCase() : "";
    var bytes = human(fig.getAttribute("data-bytes"));
    ui.download.href = fig.getAttribute("data-download");
    ui.download.textContent = "Download " + label.toLowerCase() +
      (ext || bytes ? " (" + [ext, bytes].filter(Boolean).join(", ") + ")" : "");
    ui.permalink.href = "/g/" + sec.getAttribute("data-id") + "#" + nameOf(fig);
    ui.facts.textContent = "";
    fact(ui.facts, "Kind", kind);
    fact(ui.facts, "Provider", fig.getAttribute("data-provider"));
    fact(ui.facts, "Model", fig.getAttribute("data-model"));
    if (w && h) { fact(ui.facts, "Size", w + " \u00d7 " + h); }
    var dur = fig.getAttribute("data-duration");
    if (dur) { fact(ui.facts, "Duration", Number(dur).toFixed(1) + " s"); }
    fact(ui.facts, "Seed", fig.getAttribute("data-seed"));
    fact(ui.facts, "File size", bytes);
    // The next image is fetched while this one is looked at.
    var next = all[i + 1];
    if (next && next.getAttribute("data-kind") === "image") { new Image().src = next.getAttribute("data-src"); }
  }

  function open(fig, fromUser) {
    if (!dialog) { build(); }
    Array.prototype.forEach.call(document.querySelectorAll("figure video"), function (v) { v.pause(); });
    show(fig);
    var hash = hashOf(fig);
    if (window.location.hash !== hash) {
      if (fromUser && !dialog.open) {
        history.pushState({viewer: true}, "", hash);
        pushed = true;
      } else {
        history.replaceState(history.state, "", hash);
      }
    }
    if (!dialog.open) {
      dialog.showModal();
      ui.close.focus();
    }
  }

  function step(by) {
    if (!current) { return; }
    var all = tiles();
    var i = all.indexOf(current) + by;
    if (i < 0 || i >= all.length) { return; }
    show(all[i]);
    history.replaceState(history.state, "", hashOf(all[i]));
  }

  function closed() {
    var v = ui.stage.querySelector("video");
    if (v) { v.pause(); v.removeAttribute("src"); v.load(); }
    ui.stage.textContent = "";
    var fig = current;
    current = null;
    if (skipHistory) {
      skipHistory = false;
    } else if (pushed && history.state && history.state.viewer) {
      expectPop = true;
      history.back();
    } else if (HASH.test(window.location.hash)) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    pushed = false;
    if (fig && document.contains(fig)) {
      var link = linkOf(fig);
      if (link) { link.focus({preventScroll: false}); }
    }
  }

  function fromHash(load) {
    var m = HASH.exec(window.location.hash);
    if (!m) { return null; }
    var scope = own;
    if (m[1]) {
      scope = document.getElementById("g-" + m[1]);
      if (!scope && load && !own) {
        // Shared from a gallery page it is no longer on: its generation's own page has it.
        window.location.replace("/g/" + m[1] + "#" + m[2] + "-" + m[3]);
        return null;
      }
    }
    if (!scope) { return null; }
    return scope.querySelector('figure[data-asset][data-kind="' + m[2] + '"][data-index="' + m[3] + '"]');
  }

  document.addEventListener("click", function (e) {
    if (e.defaultPrevented || e.button !== 0 || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) { return; }
    var a = e.target.closest && e.target.closest("a[href]");
    if (!a) { return; }
    var fig = a.closest("figure[data-asset]");
    if (!fig || a.getAttribute("href") !== fig.getAttribute("data-src")) { return; }
    e.preventDefault();
    open(fig, true);
  });

  window.addEventListener("popstate", function () {
    if (expectPop) { expectPop = false; return; }
    var fig = fromHash(false);
    if (fig) {
      open(fig, false);
    } else if (dialog && dialog.open) {
      pushed = false;
      skipHistory = true;
      dialog.close();
    }
  });

  function openFromHash() {
    var fig = fromHash(true);
    if (fig) { open(fig, false); }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", openFromHash);
  } else {
    openFromHash();
  }
})();
